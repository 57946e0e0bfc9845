//! pam-host: a minimal libpam application for kron's integration tests.
//!
//! It loads the PAM stack from a private config directory (`pam_start_confdir`, libpam ≥ 1.4),
//! so tests never touch the machine's /etc/pam.d, runs `pam_authenticate` once or many times
//! in one process, and prints everything the conversation showed plus each result. See
//! [`args::USAGE`].

mod args;
mod conversation;
mod counts;

use std::process::ExitCode;

use args::Args;
use conversation::Conversation;
use counts::Snapshot;
use kron_pam_client::{Item, Service, code_name, ffi};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("pam-host: {err}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let mut conversation = Conversation::new(args.answers.clone(), args.answers_stdin, args.quiet);
    let baseline = Snapshot::now();
    let mut after_first = None;
    let mut last = ffi::PAM_SUCCESS;
    for plan in &args.plans {
        for _ in 0..plan.count {
            last = login(&args, &plan.user, &mut conversation);
            println!("RESULT: {}", code_name(last));
            after_first.get_or_insert_with(Snapshot::now);
        }
    }
    if args.total_logins() > 1 {
        let after_all = Snapshot::now();
        let first = after_first.unwrap_or(baseline);
        println!(
            "TASKS: {} {} {}",
            baseline.threads, first.threads, after_all.threads
        );
        println!("FDS: {} {} {}", baseline.fds, first.fds, after_all.fds);
    }
    ExitCode::from(u8::try_from(last).unwrap_or(u8::MAX))
}

/// One `pam_start_confdir` + `pam_authenticate` + `pam_end`; returns the authenticate result
/// (or the start failure).
fn login(args: &Args, user: &str, conversation: &mut Conversation) -> i32 {
    let service = match Service::new(&args.service, &args.confdir) {
        Ok(service) => service,
        Err(e) => {
            eprintln!("pam-host: {e}");
            return ffi::PAM_BUF_ERR;
        }
    };
    let items: Vec<Item<'_>> = [
        args.rhost.as_deref().map(Item::Rhost),
        args.tty.as_deref().map(Item::Tty),
    ]
    .into_iter()
    .flatten()
    .collect();
    let outcome = service.authenticate(user, &items, conversation);
    if outcome.authenticate.is_zero() && !outcome.ok() {
        eprintln!(
            "pam-host: pam_start_confdir failed: {}",
            code_name(outcome.code)
        );
    }
    outcome.code
}
