//! PAM stacks of sshd and sudo, read the way Linux-PAM reads them, and the checks on them:
//!
//! - `pam-sshd`, `pam-sudo`: pam_kron is in the auth stack when the policy asks for codes, and
//!   a failed code fails the login (no `optional`/`sufficient`-style control that ignores it);
//! - `pam-sshd-order`, `pam-sudo-order`: nothing before pam_kron can end the stack with
//!   success first (`sufficient`, `[success=done ...]`, or a `[success=N ...]` jump over it).
//!
//! The stack is flattened as libpam does (`stack.rs`); then the dispatch rules of libpam
//! (`_pam_dispatch_aux`) are run over every combination of module results (`walk.rs`) — a
//! small search, since states repeat — asking: can the stack return success while pam_kron
//! never passed?
//!
//! - `grammar.rs`: a file's lines and words; controls as the action for each return value
//! - `handler.rs`: one line of the flattened stack, and which modules are a first factor
//! - `stack.rs`: [`Stack`], a service's auth stack with its includes and substacks flattened
//! - `walk.rs`: libpam's dispatch over every combination of results, the search for a bypass
//! - `checks.rs`: the `pam-*` checks
//! - `tests.rs`: unit tests
#![forbid(unsafe_code)]

mod checks;
mod grammar;
mod handler;
mod stack;
#[cfg(test)]
mod tests;
mod walk;

pub use checks::check;
pub use stack::Stack;
