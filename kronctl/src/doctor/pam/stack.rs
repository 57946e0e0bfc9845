//! The auth stack of one service, flattened as libpam does: `@include` and `include` inline
//! the auth lines of another file, `substack` adds a nested level whose `done`/`die` only end
//! the substack, and a jump counts the lines of its own level (a substack is one line).
#![forbid(unsafe_code)]

use super::grammar::{Control, logical_lines};
use super::handler::{Handler, Kind, MAX_LEVEL};
use super::walk::{Bypass, Goal, walk};
use crate::doctor::files::{Location, Root, read_bounded};

pub const PAM_DIR: &str = "/etc/pam.d";

/// The auth stack of one PAM service.
#[derive(Debug)]
pub struct Stack {
    pub service: String,
    /// The service file, as a system path.
    pub file: String,
    exists: bool,
    handlers: Vec<Handler>,
    /// Unreadable files and lines libpam would refuse.
    pub problems: Vec<String>,
}

impl Stack {
    /// Reads `/etc/pam.d/SERVICE` under `root` with everything it includes.
    pub fn load(root: &Root, service: &str) -> Stack {
        let file = format!("{PAM_DIR}/{service}");
        let mut stack = Stack {
            service: service.to_owned(),
            exists: root.exists(&file),
            file: file.clone(),
            handlers: Vec::new(),
            problems: Vec::new(),
        };
        if stack.exists {
            stack.read(root, &file, 0, &mut Vec::new());
        }
        stack
    }

    /// Parses text as if it were `/etc/pam.d/SERVICE`, with nothing to include (tests and the
    /// fuzz targets).
    pub fn parse(service: &str, text: &str) -> Stack {
        let mut stack = Stack {
            service: service.to_owned(),
            exists: true,
            file: format!("{PAM_DIR}/{service}"),
            handlers: Vec::new(),
            problems: Vec::new(),
        };
        let file = stack.file.clone();
        let root = Root::new(std::path::Path::new("/nonexistent-kron-test-root"));
        stack.parse_text(&root, &file, text, 0, &mut vec![file.clone()]);
        stack
    }

    pub fn exists(&self) -> bool {
        self.exists
    }

    pub fn has_kron(&self) -> bool {
        self.handlers.iter().any(Handler::is_kron)
    }

    /// Whether the auth stack can succeed with no first factor: pam_kron skips the user
    /// (PAM_IGNORE: `exempt`, or `optional` without a token) or is not there, no module that
    /// checks a secret passes, and the stack still returns success. Returns the line whose
    /// success made the stack succeed (pam_permit, say).
    pub fn succeeds_without_factor(&self) -> Option<String> {
        match walk(&self.handlers, Goal::NoFactor) {
            Some(Bypass::NoFactor { passed_by }) => Some(self.handlers[passed_by].shown()),
            _ => None,
        }
    }

    /// The modules of the stack taken as first factors, each once, in stack order.
    pub fn factors(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for name in self
            .handlers
            .iter()
            .filter(|h| h.is_factor())
            .filter_map(Handler::module)
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Reads `file` at `level`; false if it could not be read (libpam then fails the line
    /// that included it).
    fn read(&mut self, root: &Root, file: &str, level: usize, chain: &mut Vec<String>) -> bool {
        if chain.len() > MAX_LEVEL || chain.iter().any(|seen| seen == file) {
            self.problems
                .push(format!("{file} includes itself or nests too deep"));
            return false;
        }
        let text = match root.path(file).and_then(|path| read_bounded(&path)) {
            Ok(text) => text,
            Err(error) => {
                self.problems.push(format!(
                    "cannot read {file}: {error}; libpam fails the line that includes it"
                ));
                return false;
            }
        };
        chain.push(file.to_owned());
        self.parse_text(root, file, &text, level, chain);
        chain.pop();
        true
    }

    fn parse_text(
        &mut self,
        root: &Root,
        file: &str,
        text: &str,
        level: usize,
        chain: &mut Vec<String>,
    ) {
        for (line, words) in logical_lines(text) {
            let at = Location {
                file: file.to_owned(),
                line,
            };
            let Some(first) = words.first() else {
                continue;
            };
            if first.eq_ignore_ascii_case("@include") {
                match words.get(1) {
                    Some(target) => self.include(root, target, level, chain, &at, "@include"),
                    None => self.problems.push(format!("{at}: @include without a file")),
                }
                continue;
            }
            let kind = first
                .strip_prefix('-')
                .unwrap_or(first)
                .to_ascii_lowercase();
            if !matches!(kind.as_str(), "auth" | "account" | "password" | "session") {
                self.problems
                    .push(format!("{at}: unknown module type {first:?}"));
                continue;
            }
            if kind != "auth" {
                continue;
            }
            let (Some(control), Some(module)) = (words.get(1), words.get(2)) else {
                self.problems
                    .push(format!("{at}: expected TYPE CONTROL MODULE"));
                self.push_broken(level, at, words.get(1).map_or("", String::as_str));
                continue;
            };
            match control.to_ascii_lowercase().as_str() {
                "include" => self.include(root, module, level, chain, &at, control),
                "substack" => {
                    if level + 1 > MAX_LEVEL {
                        self.problems
                            .push(format!("{at}: substacks nest deeper than {MAX_LEVEL}"));
                        self.push_broken(level, at, control);
                        continue;
                    }
                    self.handlers.push(Handler {
                        level,
                        at: at.clone(),
                        kind: Kind::Substack,
                    });
                    let target = include_path(module);
                    if !self.read(root, &target, level + 1, chain) {
                        self.push_broken(level + 1, at, control);
                    }
                }
                _ => match Control::parse(control) {
                    Some(parsed) => self.handlers.push(Handler {
                        level,
                        at,
                        kind: Kind::Module {
                            path: module.clone(),
                            control: parsed,
                            broken: false,
                            args: words[3..].to_vec(),
                        },
                    }),
                    None => {
                        self.problems.push(format!(
                            "{at}: libpam refuses the control {control:?} and fails this line every time"
                        ));
                        self.handlers.push(Handler {
                            level,
                            at,
                            kind: Kind::Module {
                                path: module.clone(),
                                control: Control::must_fail(control),
                                broken: true,
                                args: words[3..].to_vec(),
                            },
                        });
                    }
                },
            }
        }
    }

    fn include(
        &mut self,
        root: &Root,
        target: &str,
        level: usize,
        chain: &mut Vec<String>,
        at: &Location,
        how: &str,
    ) {
        let file = include_path(target);
        if !self.read(root, &file, level, chain) {
            self.push_broken(level, at.clone(), how);
        }
    }

    fn push_broken(&mut self, level: usize, at: Location, how: &str) {
        self.handlers.push(Handler {
            level,
            at,
            kind: Kind::Module {
                path: format!("({how})"),
                control: Control::must_fail(how),
                broken: true,
                args: Vec::new(),
            },
        });
    }

    /// Searches libpam's dispatch over every combination of module results for a run that
    /// returns success although pam_kron did not pass. `skips` looks for runs where pam_kron
    /// never ran; otherwise for runs where it ran and failed.
    pub(super) fn find_bypass(&self, skips: bool) -> Option<Bypass> {
        walk(
            &self.handlers,
            if skips {
                Goal::KronSkipped
            } else {
                Goal::KronFailed
            },
        )
    }

    /// The lines of the flattened auth stack, in order.
    pub(super) fn handlers(&self) -> &[Handler] {
        &self.handlers
    }
}

fn include_path(target: &str) -> String {
    if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("{PAM_DIR}/{target}")
    }
}
