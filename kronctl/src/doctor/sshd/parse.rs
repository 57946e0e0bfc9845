//! sshd's configuration as sshd reads it: keywords case-insensitive, `Keyword value` or
//! `Keyword=value`, the first value obtained wins, `Include` expanded in place (globs, relative
//! to /etc/ssh), `Match` blocks to the next `Match` or the end of their file.

use std::rc::Rc;

use super::super::{Location, Root};

pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
pub(super) const SSH_DIR: &str = "/etc/ssh";
/// sshd refuses deeper nesting of `Include`.
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;
/// Bound on what one file may hold; sshd_config files are a few kilobytes.
pub(super) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Keywords these checks read, lower case; the deprecated alias is mapped onto the current one.
pub(super) const USE_PAM: &str = "usepam";
pub(super) const KBD_INTERACTIVE: &str = "kbdinteractiveauthentication";
pub(super) const PUBKEY: &str = "pubkeyauthentication";
pub(super) const PASSWORD: &str = "passwordauthentication";
pub(super) const HOSTBASED: &str = "hostbasedauthentication";
pub(super) const GSSAPI: &str = "gssapiauthentication";
pub(super) const METHODS: &str = "authenticationmethods";
pub(super) const PERMIT_ROOT: &str = "permitrootlogin";

/// The line that opened a Match block.
#[derive(Debug, PartialEq, Eq)]
pub struct MatchBlock {
    pub criteria: String,
    pub at: Location,
}

/// One `Keyword arguments...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower case, aliases resolved (`challengeresponseauthentication` →
    /// `kbdinteractiveauthentication`).
    pub keyword: String,
    /// As written (the keyword's original spelling is kept for messages).
    pub name: String,
    pub args: Vec<String>,
    pub at: Location,
    /// The Match block this line is in; `None` for global lines.
    pub block: Option<Rc<MatchBlock>>,
}

impl Directive {
    /// `UsePAM no (/etc/ssh/sshd_config:12)`.
    pub(super) fn shown(&self) -> String {
        format!("{} {} ({})", self.name, self.args.join(" "), self.at)
    }
}

/// Everything sshd would read, in order.
#[derive(Debug, Default)]
pub struct SshdConfig {
    pub directives: Vec<Directive>,
    /// Files that could not be read and lines sshd would refuse.
    pub problems: Vec<String>,
    pub files: usize,
}

impl SshdConfig {
    /// Reads `/etc/ssh/sshd_config` under `root`; `None` when it does not exist.
    pub fn load(root: &Root) -> Option<SshdConfig> {
        if !root.exists(SSHD_CONFIG) {
            return None;
        }
        let mut config = SshdConfig::default();
        config.read_file(root, SSHD_CONFIG, None, 0);
        Some(config)
    }

    /// The global value of `keyword`: its first occurrence outside every Match block.
    pub fn global(&self, keyword: &str) -> Option<&Directive> {
        self.directives
            .iter()
            .find(|d| d.keyword == keyword && d.block.is_none())
    }

    /// A global yes/no keyword, with sshd's default when absent.
    pub(super) fn flag(&self, keyword: &str, default: bool) -> (bool, Option<&Directive>) {
        match self.global(keyword) {
            Some(directive) => (
                directive
                    .args
                    .first()
                    .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
                Some(directive),
            ),
            None => (default, None),
        }
    }

    /// Lines inside Match blocks that set one of `keywords`.
    pub fn overrides(&self, keywords: &[&str]) -> Vec<&Directive> {
        self.directives
            .iter()
            .filter(|d| d.block.is_some() && keywords.contains(&d.keyword.as_str()))
            .collect()
    }

    pub(super) fn read_file(
        &mut self,
        root: &Root,
        path: &str,
        block: Option<Rc<MatchBlock>>,
        depth: usize,
    ) {
        let text = match kron_common::files::read_bounded(&root.path(path), MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(format!("cannot read {path}: {error}"));
                return;
            }
        };
        self.files += 1;
        self.parse(root, path, &text, block, depth);
    }

    pub(super) fn parse(
        &mut self,
        root: &Root,
        path: &str,
        text: &str,
        inherited: Option<Rc<MatchBlock>>,
        depth: usize,
    ) {
        // A Match block opened in this file ends with the file; the includer's state resumes.
        let mut block = inherited;
        for (index, raw) in text.lines().enumerate() {
            let at = Location {
                file: path.to_owned(),
                line: index + 1,
            };
            let Some((name, args)) = split_line(raw) else {
                continue;
            };
            let keyword = match name.to_ascii_lowercase().as_str() {
                "challengeresponseauthentication" => KBD_INTERACTIVE.to_owned(),
                other => other.to_owned(),
            };
            match keyword.as_str() {
                "match" => {
                    block = Some(Rc::new(MatchBlock {
                        criteria: args.join(" "),
                        at,
                    }));
                }
                "include" => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        self.problems.push(format!(
                            "{at}: Include nested deeper than {MAX_INCLUDE_DEPTH} levels; sshd refuses to start"
                        ));
                        continue;
                    }
                    for pattern in &args {
                        let pattern = if pattern.starts_with('/') {
                            pattern.clone()
                        } else {
                            format!("{SSH_DIR}/{pattern}")
                        };
                        for file in glob(root, &pattern) {
                            self.read_file(root, &file, block.clone(), depth + 1);
                        }
                    }
                }
                _ => self.directives.push(Directive {
                    keyword,
                    name,
                    args,
                    at,
                    block: block.clone(),
                }),
            }
        }
    }
}

/// `Keyword args...`, `Keyword=args` or `Keyword = args`; `None` for blank and comment lines.
/// Arguments may be double-quoted; a word starting with `#` starts a comment.
pub(super) fn split_line(raw: &str) -> Option<(String, Vec<String>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((name.to_owned(), words(rest)))
}

pub(super) fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return words,
            Some('"') => {
                chars.next();
                words.push(chars.by_ref().take_while(|&c| c != '"').collect());
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    word.push(c);
                }
                words.push(word);
            }
        }
    }
}

/// The files matching `pattern` (an absolute system path with `*`, `?` and `[...]` in any
/// component), sorted as glob(3) does.
pub(super) fn glob(root: &Root, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for prefix in &found {
            if !component.contains(['*', '?', '[']) {
                next.push(format!("{prefix}/{component}"));
                continue;
            }
            let dir = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            let Ok(entries) = std::fs::read_dir(root.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if (!name.starts_with('.') || component.starts_with('.'))
                    && wildcard_match(component.as_bytes(), name.as_bytes())
                {
                    next.push(format!("{prefix}/{name}"));
                }
            }
        }
        found = next;
    }
    let mut files: Vec<String> = found
        .into_iter()
        .filter(|path| root.path(path).is_file())
        .collect();
    files.sort();
    files
}

/// fnmatch(3) for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub(super) fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && wildcard_match(rest, &name[1..]);
            };
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, set) = match rest[..close].split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, &rest[..close]),
            };
            let mut matched = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    matched |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    matched |= set[i] == c;
                    i += 1;
                }
            }
            matched != negate && wildcard_match(&rest[close + 1..], name_rest)
        }
        Some((&literal, rest)) => {
            name.first() == Some(&literal) && wildcard_match(rest, &name[1..])
        }
    }
}
