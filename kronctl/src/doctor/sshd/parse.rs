//! sshd_config as sshd reads it: keywords are case-insensitive, `Keyword value` or
//! `Keyword=value`; for each keyword the first value obtained wins; `Include` expands globs
//! (relative paths are under /etc/ssh) in place; a `Match` block runs to the next `Match` or
//! the end of the file it is in, and an `Include` inside a Match block belongs to it.
#![forbid(unsafe_code)]

use std::rc::Rc;

use super::glob::glob;
use crate::doctor::files::{Location, Root, read_bounded};

pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
const SSH_DIR: &str = "/etc/ssh";
/// sshd refuses deeper nesting of `Include`.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Keywords the checks read, lower case; the deprecated alias is mapped onto the current one.
pub const USE_PAM: &str = "usepam";
pub const KBD_INTERACTIVE: &str = "kbdinteractiveauthentication";
pub const PUBKEY: &str = "pubkeyauthentication";
pub const PASSWORD: &str = "passwordauthentication";
pub const HOSTBASED: &str = "hostbasedauthentication";
pub const GSSAPI: &str = "gssapiauthentication";
pub const METHODS: &str = "authenticationmethods";
pub const PERMIT_ROOT: &str = "permitrootlogin";

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
    pub fn shown(&self) -> String {
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

    /// Parses `text` as `/etc/ssh/sshd_config`, its includes read under `root` (the fuzz
    /// targets give a root that does not exist).
    pub fn from_text(root: &Root, text: &str) -> SshdConfig {
        let mut config = SshdConfig {
            files: 1,
            ..SshdConfig::default()
        };
        config.parse(root, SSHD_CONFIG, text, None, 0);
        config
    }

    /// The global value of `keyword`: its first occurrence outside every Match block.
    pub fn global(&self, keyword: &str) -> Option<&Directive> {
        self.directives
            .iter()
            .find(|d| d.keyword == keyword && d.block.is_none())
    }

    /// A global yes/no keyword, with sshd's default when absent.
    pub fn flag(&self, keyword: &str, default: bool) -> (bool, Option<&Directive>) {
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

    fn read_file(&mut self, root: &Root, path: &str, block: Option<Rc<MatchBlock>>, depth: usize) {
        let text = match root.path(path).and_then(|path| read_bounded(&path)) {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(format!("cannot read {path}: {error}"));
                return;
            }
        };
        self.files += 1;
        self.parse(root, path, &text, block, depth);
    }

    fn parse(
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

fn words(text: &str) -> Vec<String> {
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
