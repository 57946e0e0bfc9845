//! libpam's dispatch (`_pam_dispatch_aux`) run over every combination of module results — a
//! small search, since states repeat — asking whether the stack can return success while
//! pam_kron never passed.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::grammar::{Action, ret};
use super::handler::{Handler, Kind, MAX_LEVEL};

/// What a search over the stack's runs looks for; every goal is a run that ends in success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goal {
    /// pam_kron ran and failed.
    KronFailed,
    /// pam_kron never ran: a line ended the stack, or jumped, before it.
    KronSkipped,
    /// pam_kron skipped the user (PAM_IGNORE), or never ran, and no first factor passed.
    NoFactor,
}

/// What pam_kron can return (see pam_kron/src/error.rs) besides success and PAM_IGNORE (the
/// user is skipped: `exempt`, or `optional` without a token).
const KRON_FAILURES: [usize; 5] = [
    ret::AUTH_ERR,
    ret::AUTHINFO_UNAVAIL,
    ret::MAXTRIES,
    ret::CRED_INSUFFICIENT,
    ret::SERVICE_ERR,
];
/// What any other module is assumed able to return.
const ANY_RESULT: [usize; 9] = [
    ret::SUCCESS,
    ret::IGNORE,
    ret::AUTH_ERR,
    ret::USER_UNKNOWN,
    ret::AUTHINFO_UNAVAIL,
    ret::CRED_INSUFFICIENT,
    ret::MAXTRIES,
    ret::NEW_AUTHTOK_REQD,
    ret::PERM_DENIED,
];

/// [`ANY_RESULT`] without success (and without PAM_IGNORE): a first factor that did not pass
/// reports a failure; it does not abstain. (pam_unix never ignores; pam_sss and pam_ldap do
/// only with `ignore_unknown_user`-style options.)
const FACTOR_FAILURES: [usize; 6] = [
    ret::AUTH_ERR,
    ret::USER_UNKNOWN,
    ret::AUTHINFO_UNAVAIL,
    ret::CRED_INSUFFICIENT,
    ret::MAXTRIES,
    ret::PERM_DENIED,
];

/// The results the search for `goal` lets `handler` return.
fn results(handler: &Handler, goal: Goal) -> &'static [usize] {
    if handler.is_kron() && goal == Goal::KronSkipped {
        return &[];
    }
    match (&handler.kind, handler.module()) {
        (Kind::Module { broken: true, .. }, _) => &[ret::PERM_DENIED],
        _ if handler.is_kron() => match goal {
            Goal::NoFactor => &[ret::IGNORE],
            _ => &KRON_FAILURES,
        },
        (_, Some("pam_deny.so")) => &[ret::AUTH_ERR],
        (_, Some("pam_permit.so")) => &[ret::SUCCESS],
        _ if goal == Goal::NoFactor && handler.is_factor() => &FACTOR_FAILURES,
        _ => &ANY_RESULT,
    }
}

/// Runs libpam's dispatch over every combination of the results [`results`]
/// allows for `goal`, and returns the first run that ends in success.
pub(super) fn walk(handlers: &[Handler], goal: Goal) -> Option<Bypass> {
    let start = State {
        pos: 0,
        prev_level: 0,
        impression: Impression::Undef,
        status: ret::PERM_DENIED,
        substates: vec![(Impression::Undef, ret::PERM_DENIED); MAX_LEVEL + 2],
        kron_failed: None,
        skipped_by: None,
        passed_by: None,
    };
    let mut seen = HashSet::new();
    let mut todo = vec![start];
    while let Some(mut state) = todo.pop() {
        if !seen.insert(state.clone()) {
            continue;
        }
        let Some(handler) = handlers.get(state.pos) else {
            let success = state.status == ret::SUCCESS && state.impression == Impression::Positive;
            if !success {
                continue;
            }
            match (goal, state.kron_failed, state.skipped_by, state.passed_by) {
                (Goal::KronSkipped, None, Some(by), _) => return Some(Bypass::Skipped { by }),
                (Goal::KronFailed, Some(kron), _, _) => {
                    return Some(Bypass::FailureIgnored { kron });
                }
                (Goal::NoFactor, _, _, Some(passed_by)) => {
                    return Some(Bypass::NoFactor { passed_by });
                }
                _ => continue,
            }
        };
        let pos = state.pos;
        let level = handler.level;
        if state.prev_level < level {
            state.substates[level] = (state.impression, state.status);
        }
        if handler.kind == Kind::Substack {
            todo.push(State {
                pos: pos + 1,
                prev_level: level,
                ..state
            });
            continue;
        }
        // Pushed in reverse, so the first result (success) is explored first and the
        // reported line is the earliest one that can end the stack.
        // A pass, or a skip otpd decided on, is pam_kron doing its job: results() leaves
        // them out of the searches for a bypass of pam_kron.
        for &result in results(handler, goal).iter().rev() {
            let mut next = state.clone();
            if handler.is_kron() && goal == Goal::KronFailed {
                next.kron_failed.get_or_insert(pos);
            }
            let action = handler.action(result);
            let mut after = pos + 1;
            match action {
                Action::Reset => (next.impression, next.status) = next.substates[level],
                Action::Ok | Action::Done => {
                    if next.impression == Impression::Undef
                        || (next.impression == Impression::Positive && next.status == ret::SUCCESS)
                    {
                        if next.impression == Impression::Undef && goal == Goal::NoFactor {
                            next.passed_by = Some(pos);
                        }
                        next.impression = Impression::Positive;
                        next.status = result;
                    }
                    if next.impression == Impression::Positive && action == Action::Done {
                        after = end_of_level(handlers, pos, level) + 1;
                    }
                }
                Action::Bad | Action::Die => {
                    if next.impression != Impression::Negative {
                        next.impression = Impression::Negative;
                        next.status = if result == ret::IGNORE {
                            ret::PERM_DENIED
                        } else {
                            result
                        };
                    }
                    if action == Action::Die {
                        after = end_of_level(handlers, pos, level) + 1;
                    }
                }
                Action::Ignore => {}
                Action::Jump(count) => {
                    let mut last = pos;
                    let mut left = count;
                    while last + 1 < handlers.len() && handlers[last + 1].level >= level && left > 0
                    {
                        last += 1;
                        while last + 1 < handlers.len() && handlers[last + 1].level > level {
                            last += 1;
                        }
                        left -= 1;
                    }
                    if left > 0 {
                        // libpam: "bad jump in stack".
                        next.impression = Impression::Negative;
                        next.status = ret::PERM_DENIED;
                    }
                    after = last + 1;
                }
            }
            if next.skipped_by.is_none()
                && handlers[pos + 1..after.min(handlers.len())]
                    .iter()
                    .any(Handler::is_kron)
            {
                next.skipped_by = Some(pos);
            }
            next.pos = after;
            next.prev_level = level;
            todo.push(next);
        }
    }
    None
}

/// The last handler of the (sub)stack that `pos` is in at `level`.
fn end_of_level(handlers: &[Handler], pos: usize, level: usize) -> usize {
    let mut last = pos;
    while last + 1 < handlers.len() && handlers[last + 1].level >= level {
        last += 1;
    }
    last
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Impression {
    Undef,
    Positive,
    Negative,
}

/// One point of libpam's walk over the stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    pos: usize,
    prev_level: usize,
    impression: Impression,
    status: usize,
    substates: Vec<(Impression, usize)>,
    /// The pam_kron line that returned a failure on this path.
    kron_failed: Option<usize>,
    /// The first line whose `done` or jump passed over a pam_kron line on this path.
    skipped_by: Option<usize>,
    /// The line whose result first made the stack's impression positive (only searched for
    /// [`Goal::NoFactor`]).
    passed_by: Option<usize>,
}

/// How a stack can succeed without pam_kron passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bypass {
    /// The line at this index ended the stack, or jumped, before pam_kron ran.
    Skipped { by: usize },
    /// pam_kron (this index) failed and the stack still succeeded.
    FailureIgnored { kron: usize },
    /// No first factor passed and pam_kron did not ask; this line made the stack succeed.
    NoFactor { passed_by: usize },
}
