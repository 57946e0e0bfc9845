//! PAM stacks of sshd and sudo, read the way Linux-PAM reads them, and the checks on them:
//!
//! | file | what |
//! |---|---|
//! | `grammar.rs` | a PAM file's lines and controls |
//! | `stack.rs` | loading a service's auth stack, includes and substacks flattened |
//! | `walk.rs` | libpam's dispatch over every combination of module results |
//! | `checks.rs` | the findings |
//! | `tests.rs` | grammar, stacks and checks on prepared files |
//!
//! The check ids:
//!
//! - `pam-sshd`, `pam-sudo`: pam_kron is in the auth stack when the policy asks for codes, and
//!   a failed code fails the login (no `optional`/`sufficient`-style control that ignores it);
//! - `pam-sshd-order`, `pam-sudo-order`: nothing before pam_kron can end the stack with
//!   success first (`sufficient`, `[success=done ...]`, or a `[success=N ...]` jump over it).
//!
//! The stack is flattened as libpam does: `@include` and `include` inline the auth lines of
//! another file, `substack` adds a nested level whose `done`/`die` only end the substack, and a
//! jump counts the lines of its own level (a substack is one line). Then the dispatch rules
//! of libpam (`_pam_dispatch_aux`) are run over every combination of module results — a
//! small search, since states repeat — asking: can the stack return success while pam_kron
//! never passed?

mod checks;
mod grammar;
mod stack;
#[cfg(test)]
mod tests;
mod walk;

pub use checks::check;
pub use stack::Stack;
