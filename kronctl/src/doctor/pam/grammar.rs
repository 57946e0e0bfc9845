//! libpam's file grammar: a file's configuration lines and their words, and a control
//! (`required`, `[success=1 default=ignore]`, ...) as the action it takes for each return value.
#![forbid(unsafe_code)]

/// PAM return values, as indexes into a control's actions (from `<security/_pam_types.h>`).
pub(super) mod ret {
    pub const SUCCESS: usize = 0;
    pub const SERVICE_ERR: usize = 3;
    pub const PERM_DENIED: usize = 6;
    pub const AUTH_ERR: usize = 7;
    pub const CRED_INSUFFICIENT: usize = 8;
    pub const AUTHINFO_UNAVAIL: usize = 9;
    pub const USER_UNKNOWN: usize = 10;
    pub const MAXTRIES: usize = 11;
    pub const NEW_AUTHTOK_REQD: usize = 12;
    pub const IGNORE: usize = 25;
    pub const COUNT: usize = 32;
}

/// The names a `[value=action ...]` control may use, by return value.
const RETURN_NAMES: [&str; ret::COUNT] = [
    "success",
    "open_err",
    "symbol_err",
    "service_err",
    "system_err",
    "buf_err",
    "perm_denied",
    "auth_err",
    "cred_insufficient",
    "authinfo_unavail",
    "user_unknown",
    "maxtries",
    "new_authtok_reqd",
    "acct_expired",
    "session_err",
    "cred_unavail",
    "cred_expired",
    "cred_err",
    "no_module_data",
    "conv_err",
    "authtok_err",
    "authtok_recover_err",
    "authtok_lock_busy",
    "authtok_disable_aging",
    "try_again",
    "ignore",
    "abort",
    "authtok_expired",
    "module_unknown",
    "bad_item",
    "conv_again",
    "incomplete",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Ignore,
    Ok,
    Done,
    Bad,
    Die,
    Reset,
    Jump(usize),
}

impl Action {
    pub(super) fn parse(word: &str) -> Option<Action> {
        Some(match word.to_ascii_lowercase().as_str() {
            "ignore" => Action::Ignore,
            "ok" => Action::Ok,
            "done" => Action::Done,
            "bad" => Action::Bad,
            "die" => Action::Die,
            "reset" => Action::Reset,
            number => match number.parse::<usize>() {
                Ok(n) if n > 0 => Action::Jump(n),
                _ => return None,
            },
        })
    }
}

/// A control: the action for each return value, and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Control {
    pub(super) actions: Box<[Action; ret::COUNT]>,
    pub(super) text: String,
}

impl Control {
    /// `required`, `requisite`, `optional`, `sufficient` or `[value=action ...]`; `None` if
    /// libpam would refuse it (it then makes the line fail every time).
    pub(super) fn parse(text: &str) -> Option<Control> {
        let mut actions = [None; ret::COUNT];
        let fill = |actions: &mut [Option<Action>; ret::COUNT], default: Action| {
            for action in actions.iter_mut().filter(|a| a.is_none()) {
                *action = Some(default);
            }
        };
        match text.to_ascii_lowercase().as_str() {
            "required" | "requisite" => {
                actions[ret::SUCCESS] = Some(Action::Ok);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Ok);
                actions[ret::IGNORE] = Some(Action::Ignore);
                let default = if text.eq_ignore_ascii_case("required") {
                    Action::Bad
                } else {
                    Action::Die
                };
                fill(&mut actions, default);
            }
            "optional" => {
                actions[ret::SUCCESS] = Some(Action::Ok);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Ok);
                fill(&mut actions, Action::Ignore);
            }
            "sufficient" => {
                actions[ret::SUCCESS] = Some(Action::Done);
                actions[ret::NEW_AUTHTOK_REQD] = Some(Action::Done);
                fill(&mut actions, Action::Ignore);
            }
            _ => {
                let inner = text.strip_prefix('[')?.strip_suffix(']')?;
                for pair in inner.split_whitespace() {
                    let (name, action) = pair.split_once('=')?;
                    let action = Action::parse(action)?;
                    let name = name.to_ascii_lowercase();
                    if name == "default" {
                        fill(&mut actions, action);
                    } else {
                        let index = RETURN_NAMES.iter().position(|n| *n == name)?;
                        actions[index] = Some(action);
                    }
                }
                // libpam: whatever is still unset is `bad`.
                fill(&mut actions, Action::Bad);
            }
        }
        Some(Control {
            actions: Box::new(actions.map(|a| a.expect("every action is filled"))),
            text: text.to_owned(),
        })
    }

    /// A line libpam could not parse: it fails with PERM_DENIED every time.
    pub(super) fn must_fail(text: &str) -> Control {
        Control {
            actions: Box::new([Action::Bad; ret::COUNT]),
            text: text.to_owned(),
        }
    }
}

/// The configuration lines of a PAM file with their first physical line number: comments
/// (`#` to the end of the line) removed, lines ending in `\` joined with the next, and split
/// into words where `[...]` (with `\]` inside) is one word.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            start = index + 1;
        }
        let content = raw.split('#').next().unwrap_or("");
        match content.trim_end().strip_suffix('\\') {
            Some(continued) => {
                pending.push_str(continued);
                pending.push(' ');
            }
            None => {
                pending.push_str(content);
                lines.push((start, words(&pending)));
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        lines.push((start, words(&pending)));
    }
    lines
}

fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return words;
        };
        let mut word = String::new();
        if first == '[' {
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&']') {
                    word.push(']');
                    chars.next();
                    continue;
                }
                word.push(c);
                if c == ']' {
                    break;
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}
