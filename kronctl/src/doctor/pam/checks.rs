//! The `pam-*` checks on one service's auth stack (each check id is listed in `mod.rs`).
#![forbid(unsafe_code)]

use super::grammar::{Action, ret};
use super::handler::Kind;
use super::stack::Stack;
use super::walk::Bypass;
use crate::doctor::config::{Asks, Policy};
use crate::doctor::report::{Finding, Findings};

/// The two findings for one service's stack.
pub fn check(stack: &Stack, policy: &Policy, out: &mut Findings) {
    let (present_id, order_id) = match stack.service.as_str() {
        "sshd" => ("pam-sshd", "pam-sshd-order"),
        "sudo" => ("pam-sudo", "pam-sudo-order"),
        other => unreachable!("no checks for PAM service {other}"),
    };
    let service = &stack.service;
    let file = &stack.file;
    if !stack.exists() {
        out.push(Finding::ok(
            present_id,
            format!("no {file}: {service} is not installed here, nothing to check"),
        ));
        return;
    }
    for problem in &stack.problems {
        out.push(Finding::warning(
            present_id,
            problem.clone(),
            format!("correct it, then test a {service} login in a second session before closing the first"),
        ));
    }
    let add_line = format!("add `auth required pam_kron.so` to {file} after the password module");
    let Some(first_kron) = stack.handlers().iter().find(|h| h.is_kron()) else {
        let asks = policy.asks(service);
        let message = format!("pam_kron.so is not in the auth stack of {file}");
        out.push(match asks {
            Asks::Always => Finding::error(
                present_id,
                format!("{message}, but the policy requires codes for {service}: {service} logins skip the second factor"),
                add_line,
            ),
            Asks::Enrolled => Finding::warning(
                present_id,
                format!("{message}: enrolled users are never asked for a code by {service}"),
                add_line,
            ),
            Asks::Never => Finding::ok(
                present_id,
                format!("{message}, and the policy asks no codes for {service}"),
            ),
        });
        out.push(Finding::ok(
            order_id,
            format!("no pam_kron.so line in {file} to check"),
        ));
        return;
    };

    match stack.find_bypass(false) {
        Some(Bypass::FailureIgnored { kron }) => {
            let kron = &stack.handlers()[kron];
            out.push(Finding::error(
                present_id,
                format!(
                    "a wrong code does not fail a {service} login: {} lets the stack succeed after pam_kron fails",
                    kron.shown()
                ),
                format!("make it `auth required pam_kron.so` (or `requisite`) in {}", kron.at.file),
            ));
        }
        _ => out.push(Finding::ok(
            present_id,
            format!("{} in the auth stack of {file}", first_kron.shown()),
        )),
    }
    if let Some(finding) = short_timeout(stack, policy, present_id) {
        out.push(finding);
    }

    match stack.find_bypass(true) {
        Some(Bypass::Skipped { by }) => {
            let by = &stack.handlers()[by];
            let how = match by.kind {
                Kind::Module { ref control, .. }
                    if matches!(control.actions[ret::SUCCESS], Action::Jump(_)) =>
                {
                    "jumps over pam_kron.so on success"
                }
                _ => "can end the auth stack with success before pam_kron.so runs",
            };
            let module = by.module().unwrap_or("that line");
            let fix = if by.level == 0 && by.at.file != *file {
                // Inlined from another file (RHEL's `auth include system-auth`, say): as a
                // substack, its `sufficient` would end only the substack.
                format!(
                    "in {file}, include {} with `auth substack` instead of `include`, or make {module} `requisite` there",
                    by.at.file
                )
            } else {
                format!(
                    "in {}, make {module} `requisite` (or `[success=ok default=die]`), or put pam_kron.so before it",
                    by.at.file
                )
            };
            out.push(Finding::error(
                order_id,
                format!(
                    "{} {how} ({}): {service} logins can pass without a code",
                    by.shown(),
                    first_kron.at
                ),
                fix,
            ));
        }
        _ => out.push(Finding::ok(
            order_id,
            format!("nothing in {file} can end the auth stack with success before pam_kron.so"),
        )),
    }
}

/// A pam_kron line whose `timeout=` ends before otpd stops waiting for an email or SMS server
/// at a login (`kron_proto::LOGIN_SEND_WAIT_SECS`), where otpd.toml sends codes: a slow server
/// then makes such a login fail as "unavailable", which `authinfo_unavail=ignore` lets through.
fn short_timeout(stack: &Stack, policy: &Policy, id: &'static str) -> Option<Finding> {
    let config = policy.config.as_ref()?;
    if config.email.is_none() && config.sms.is_none() {
        return None;
    }
    let wait = kron_proto::LOGIN_SEND_WAIT_SECS;
    stack.handlers().iter().find_map(|handler| {
        let timeout = handler.kron_timeout().filter(|&t| t <= wait)?;
        Some(Finding::warning(
            id,
            format!(
                "{} has timeout={timeout}: otpd waits up to {wait} s for an email or SMS server \
                 before it prompts, so a slow server makes such a login fail as unavailable",
                handler.shown()
            ),
            format!(
                "raise it to timeout={} or more (5 is the default) in {}",
                wait + 1,
                handler.at.file
            ),
        ))
    })
}
