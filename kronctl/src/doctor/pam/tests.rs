//! Unit tests of the PAM reader, the dispatch search and the `pam-*` checks.
#![forbid(unsafe_code)]

use super::checks::check;
use super::grammar::{Action, Control, logical_lines, ret};
use super::stack::Stack;
use super::walk::Bypass;
use crate::doctor::config::Policy;
use crate::doctor::files::Root;
use crate::doctor::report::{Findings, Severity};

/// Debian 12's /etc/pam.d/common-auth, comments dropped.
const DEBIAN_COMMON_AUTH: &str = "\
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
auth\toptional\t\t\tpam_cap.so
";

fn with_common(text: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(pam.join("common-auth"), DEBIAN_COMMON_AUTH).unwrap();
    std::fs::write(pam.join("sshd"), text).unwrap();
    Stack::load(&Root::new(dir.path()), "sshd")
}

fn verdicts(stack: &Stack) -> (Option<Bypass>, Option<Bypass>) {
    (stack.find_bypass(false), stack.find_bypass(true))
}

#[test]
fn lines_are_parsed_like_libpam() {
    let lines = logical_lines(
        "# comment\nauth [success=1 default=ignore] pam_unix.so nullok # trailing\n\
         -auth  optional \\\n   pam_gnome_keyring.so\n\n@include common-auth\n\
         auth required pam_x.so [arg with \\] bracket]\n",
    );
    let words: Vec<Vec<&str>> = lines
        .iter()
        .map(|(_, w)| w.iter().map(String::as_str).collect())
        .filter(|w: &Vec<&str>| !w.is_empty())
        .collect();
    assert_eq!(
        words,
        vec![
            vec![
                "auth",
                "[success=1 default=ignore]",
                "pam_unix.so",
                "nullok"
            ],
            vec!["-auth", "optional", "pam_gnome_keyring.so"],
            vec!["@include", "common-auth"],
            vec!["auth", "required", "pam_x.so", "[arg with ] bracket]"],
        ]
    );
    assert_eq!(lines[2].0, 3, "a joined line keeps its first line number");
}

#[test]
fn controls_expand_to_libpam_actions() {
    let required = Control::parse("Required").unwrap();
    assert_eq!(required.actions[ret::SUCCESS], Action::Ok);
    assert_eq!(required.actions[ret::IGNORE], Action::Ignore);
    assert_eq!(required.actions[ret::AUTH_ERR], Action::Bad);
    assert_eq!(
        Control::parse("requisite").unwrap().actions[ret::AUTH_ERR],
        Action::Die
    );
    let sufficient = Control::parse("sufficient").unwrap();
    assert_eq!(sufficient.actions[ret::SUCCESS], Action::Done);
    assert_eq!(sufficient.actions[ret::AUTH_ERR], Action::Ignore);
    let bracket = Control::parse("[default=ignore success=2 auth_err=die]").unwrap();
    assert_eq!(bracket.actions[ret::SUCCESS], Action::Jump(2));
    assert_eq!(bracket.actions[ret::AUTH_ERR], Action::Die);
    assert_eq!(bracket.actions[ret::USER_UNKNOWN], Action::Ignore);
    let no_default = Control::parse("[success=ok]").unwrap();
    assert_eq!(no_default.actions[ret::AUTH_ERR], Action::Bad);
    for bad in [
        "[success=maybe]",
        "[nonsense=ok]",
        "[success=0]",
        "mandatory",
        "[success=ok",
    ] {
        assert_eq!(Control::parse(bad), None, "{bad}");
    }
}

#[test]
fn kron_after_debian_common_auth_is_sound() {
    let stack = with_common("@include common-auth\nauth required pam_kron.so\n");
    assert!(stack.problems.is_empty(), "{:?}", stack.problems);
    assert!(stack.has_kron());
    assert_eq!(verdicts(&stack), (None, None));
    let requisite = with_common("@include common-auth\nauth requisite pam_kron.so\n");
    assert_eq!(verdicts(&requisite), (None, None));
    let include =
        with_common("auth include common-auth\nauth [success=ok default=die] pam_kron.so\n");
    assert_eq!(verdicts(&include), (None, None));
}

#[test]
fn kron_placed_by_pam_auth_update_is_sound() {
    // packaging/debian/pam-config: Auth-Type Additional, after the Primary block.
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(
        pam.join("common-auth"),
        DEBIAN_COMMON_AUTH.replace(
            "auth\toptional",
            "auth\trequired\t\t\tpam_kron.so\nauth\toptional",
        ),
    )
    .unwrap();
    std::fs::write(pam.join("sudo"), "@include common-auth\n").unwrap();
    let stack = Stack::load(&Root::new(dir.path()), "sudo");
    assert!(stack.has_kron());
    assert_eq!(verdicts(&stack), (None, None));
}

#[test]
fn sufficient_before_kron_ends_the_stack_first() {
    let stack = with_common(
        "auth sufficient pam_unix.so\nauth required pam_kron.so\nauth required pam_deny.so\n",
    );
    assert_eq!(stack.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
    let done =
        with_common("auth [success=done default=ignore] pam_sss.so\nauth required pam_kron.so\n");
    assert_eq!(done.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
    // After pam_kron, sufficient cannot undo a failed code.
    let after = with_common(
        "auth requisite pam_unix.so\nauth required pam_kron.so\nauth sufficient pam_permit.so\n",
    );
    assert_eq!(verdicts(&after), (None, None));
}

#[test]
fn jumps_over_kron_are_found_and_count_lines_of_their_level() {
    // pam_kron wedged into common-auth between the jump and its target.
    let wedged = with_common(
        "auth [success=2 default=ignore] pam_unix.so\nauth required pam_kron.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
    );
    assert_eq!(wedged.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
    // success=1 only skips pam_deny: fine.
    let sound = with_common(
        "auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\nauth required pam_kron.so\n",
    );
    assert_eq!(verdicts(&sound), (None, None));
}

#[test]
fn sufficient_inside_a_substack_only_ends_the_substack() {
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(
        pam.join("first-factor"),
        "auth sufficient pam_unix.so\nauth sufficient pam_sss.so\nauth required pam_deny.so\n",
    )
    .unwrap();
    std::fs::write(
        pam.join("sshd"),
        "auth substack first-factor\nauth required pam_kron.so\n",
    )
    .unwrap();
    let stack = Stack::load(&Root::new(dir.path()), "sshd");
    assert_eq!(verdicts(&stack), (None, None));
    // The same file with `include` inlines the sufficient lines: they end the whole stack.
    std::fs::write(
        pam.join("sshd"),
        "auth include first-factor\nauth required pam_kron.so\n",
    )
    .unwrap();
    let stack = Stack::load(&Root::new(dir.path()), "sshd");
    assert_eq!(stack.find_bypass(true), Some(Bypass::Skipped { by: 0 }));
    // A jump counts the whole substack as one line.
    std::fs::write(
        pam.join("sshd"),
        "auth [success=1 default=ignore] pam_unix.so\nauth substack first-factor\nauth required pam_kron.so\n",
    )
    .unwrap();
    let stack = Stack::load(&Root::new(dir.path()), "sshd");
    assert_eq!(stack.find_bypass(true), None);
}

#[test]
fn weak_controls_on_kron_let_a_wrong_code_through() {
    for control in [
        "optional",
        "sufficient",
        "[success=ok default=ignore]",
        "[success=ok auth_err=reset authinfo_unavail=reset default=bad]",
    ] {
        let stack = with_common(&format!(
            "@include common-auth\nauth {control} pam_kron.so\nauth required pam_permit.so\n"
        ));
        assert!(
            matches!(
                stack.find_bypass(false),
                Some(Bypass::FailureIgnored { .. })
            ),
            "{control}"
        );
    }
    // Debian's own pattern with a deny after it is sound.
    let jump = with_common(
        "auth [success=1 default=ignore] pam_kron.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n",
    );
    assert_eq!(verdicts(&jump), (None, None));
}

#[test]
fn stacks_that_pass_with_no_first_factor_are_found() {
    // The key-then-code stack: pam_permit succeeds when pam_kron skips the user.
    let key_then_code = Stack::parse(
        "sshd",
        "auth required pam_kron.so\nauth required pam_permit.so\n",
    );
    assert_eq!(
        key_then_code.succeeds_without_factor().as_deref(),
        Some("pam_permit.so (`required`, /etc/pam.d/sshd:2)")
    );
    assert!(key_then_code.factors().is_empty());
    for text in [
        // Modules that check no secret do not count.
        "auth required pam_env.so\nauth requisite pam_nologin.so\nauth required pam_faildelay.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        // A password module whose failure is ignored is no factor.
        "auth optional pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        "auth [success=ok default=ignore] pam_sss.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        // pam_rootok always passes inside sshd, which runs PAM as root.
        "auth sufficient pam_rootok.so\nauth required pam_kron.so\n",
        // No pam_kron at all.
        "auth required pam_permit.so\n",
    ] {
        assert!(
            Stack::parse("sshd", text)
                .succeeds_without_factor()
                .is_some(),
            "{text}"
        );
    }
    for text in [
        // pam_kron alone: a stack in which every module ignored fails in libpam.
        "auth required pam_kron.so\n",
        "auth requisite pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        "auth required pam_unix.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        "auth required pam_sss.so\nauth optional pam_kron.so\n",
        // A module doctor does not know is taken to check something.
        "auth required pam_corp_password.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
        "auth required pam_deny.so\nauth required pam_kron.so\nauth required pam_permit.so\n",
    ] {
        let stack = Stack::parse("sshd", text);
        assert_eq!(stack.succeeds_without_factor(), None, "{text}");
    }
    assert_eq!(
        Stack::parse(
            "sshd",
            "auth required pam_env.so\nauth required pam_corp_password.so\nauth required pam_unix.so\nauth required pam_corp_password.so\n"
        )
        .factors(),
        ["pam_corp_password.so", "pam_unix.so"]
    );
}

#[test]
fn password_first_stacks_need_a_first_factor() {
    // Debian: common-auth's pam_unix, then pam_deny when it fails.
    for text in [
        "@include common-auth\nauth required pam_kron.so\n",
        "@include common-auth\nauth required pam_kron.so\nauth required pam_permit.so\n",
    ] {
        let stack = with_common(text);
        assert_eq!(stack.succeeds_without_factor(), None, "{text}");
        assert_eq!(stack.factors(), ["pam_unix.so"]);
    }
    // RHEL 9's password-auth as a substack, then pam_kron and postlogin.
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(
        pam.join("password-auth"),
        "auth required pam_env.so\nauth required pam_faildelay.so delay=2000000\n\
         auth [default=1 ignore=ignore success=ok] pam_usertype.so isregular\n\
         auth [default=1 ignore=ignore success=ok] pam_localuser.so\n\
         auth sufficient pam_unix.so nullok\n\
         auth [default=1 ignore=ignore success=ok] pam_usertype.so isregular\n\
         auth sufficient pam_sss.so forward_pass\nauth required pam_deny.so\n",
    )
    .unwrap();
    std::fs::write(
        pam.join("postlogin"),
        "session optional pam_umask.so silent\n",
    )
    .unwrap();
    std::fs::write(
        pam.join("sshd"),
        "auth substack password-auth\nauth required pam_kron.so\nauth include postlogin\n",
    )
    .unwrap();
    let root = Root::new(dir.path());
    let stack = Stack::load(&root, "sshd");
    assert!(stack.problems.is_empty(), "{:?}", stack.problems);
    assert_eq!(stack.succeeds_without_factor(), None);
    // RHEL's key-then-code stack: the password substack is gone.
    std::fs::write(
        pam.join("sshd"),
        "auth required pam_kron.so\nauth required pam_permit.so\nauth include postlogin\n",
    )
    .unwrap();
    assert!(
        Stack::load(&root, "sshd")
            .succeeds_without_factor()
            .is_some()
    );
}

#[test]
fn broken_lines_fail_and_are_reported() {
    let stack = Stack::parse(
        "sshd",
        "auth include missing-file\nauth mandatory pam_kron.so\nbogus x y\n",
    );
    assert_eq!(stack.problems.len(), 3, "{:?}", stack.problems);
    assert_eq!(verdicts(&stack), (None, None));
    // A self-include is refused rather than followed forever.
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(pam.join("sshd"), "@include sshd\n").unwrap();
    let looped = Stack::load(&Root::new(dir.path()), "sshd");
    assert_eq!(looped.problems.len(), 1, "{:?}", looped.problems);
}

#[test]
fn findings_per_service() {
    let policy = |text: &str| Policy {
        config: Some(kron_common::config::Config::parse(text, "otpd.toml").unwrap()),
        origin: "otpd.toml".into(),
    };
    let run = |stack: &Stack, toml: &str| {
        let mut out = Findings::new(&[]);
        check(stack, &policy(toml), &mut out);
        out.into_vec()
            .into_iter()
            .map(|f| (f.check, f.severity))
            .collect::<Vec<_>>()
    };
    let missing = Stack::parse("sudo", "@include common-auth\n");
    assert!(run(&missing, "default_mode = \"require\"\n").contains(&("pam-sudo", Severity::Error)));
    assert!(run(&missing, "").contains(&("pam-sudo", Severity::Warning)));
    assert!(run(&missing, "default_mode = \"exempt\"\n").contains(&("pam-sudo", Severity::Ok)));
    let bypassed = Stack::parse(
        "sshd",
        "auth sufficient pam_unix.so\nauth required pam_kron.so\n",
    );
    assert_eq!(
        run(&bypassed, ""),
        [
            ("pam-sshd", Severity::Ok),
            ("pam-sshd-order", Severity::Error)
        ]
    );
    let weak = Stack::parse(
        "sshd",
        "auth requisite pam_unix.so\nauth optional pam_kron.so\n",
    );
    assert_eq!(
        run(&weak, ""),
        [
            ("pam-sshd", Severity::Error),
            ("pam-sshd-order", Severity::Ok)
        ]
    );
}

/// A pam_kron `timeout=` no longer than otpd's wait for an email or SMS server is a warning
/// where otpd.toml sends codes (a slow server would make such logins "unavailable"), and
/// nothing where it sends none; the last `timeout=` counts, as in the module.
#[test]
fn a_module_timeout_inside_otpds_wait_for_a_code_server_is_a_warning() {
    let email =
        "[email]\nserver = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"kron@host.example\"\n";
    let findings = |line: &str, toml: &str| {
        let stack = Stack::parse("sshd", &format!("auth requisite pam_unix.so\n{line}\n"));
        let policy = Policy {
            config: Some(kron_common::config::Config::parse(toml, "otpd.toml").unwrap()),
            origin: "otpd.toml".into(),
        };
        let mut out = Findings::new(&[]);
        check(&stack, &policy, &mut out);
        out.into_vec()
    };
    let bracketed = findings("auth required pam_kron.so [timeout=2]", email);
    assert!(
        bracketed.iter().any(|f| f.severity == Severity::Warning),
        "libpam strips the brackets"
    );
    let short = findings("auth required pam_kron.so timeout=3", email);
    let warning = short
        .iter()
        .find(|f| f.check == "pam-sshd" && f.severity == Severity::Warning)
        .expect("a warning");
    assert!(
        warning.message.contains("timeout=3") && warning.message.contains("unavailable"),
        "{}",
        warning.message
    );
    for (line, toml) in [
        ("auth required pam_kron.so timeout=4", email),
        ("auth required pam_kron.so", email),
        ("auth required pam_kron.so timeout=2 timeout=10", email),
        ("auth required pam_kron.so timeout=+2", email),
        ("auth required pam_kron.so timeout=2", ""),
    ] {
        assert!(
            findings(line, toml)
                .iter()
                .all(|f| f.severity != Severity::Warning),
            "{line} with {toml:?}"
        );
    }
}

/// A crafted image's PAM file puts terminal escapes in an unknown first word, an included
/// file's name and a module's name: none reaches the report as a control character, in text
/// or in the strings of the JSON.
#[test]
fn words_from_the_file_reach_the_report_without_control_characters() {
    use crate::doctor::report::{render_human, render_json};
    let stack = Stack::parse(
        "sshd",
        "\x1b]0;owned\x07auth required pam_unix.so\n\
         @include \x1b[2J\u{9b}31m\n\
         auth sufficient pam_\x1b[8munix.so\n\
         auth required pam_kron.so\n",
    );
    assert!(
        stack.problems[0].contains(r#"unknown module type "\u{1b}]0;owned\u{7}auth""#),
        "{:?}",
        stack.problems
    );
    let policy = Policy {
        config: Some(kron_common::config::Config::parse("", "otpd.toml").unwrap()),
        origin: "otpd.toml".into(),
    };
    let mut out = Findings::new(&[]);
    check(&stack, &policy, &mut out);
    let findings = out.into_vec();
    assert!(findings.len() >= 4, "{findings:?}");

    for line in render_human(&findings).lines() {
        assert!(!line.contains(char::is_control), "{line:?}");
    }
    let json = render_json(&findings);
    assert!(!json.trim_end().contains(char::is_control), "{json:?}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for finding in value["findings"].as_array().unwrap() {
        for text in [&finding["message"], &finding["fix"]] {
            let text = text.as_str().unwrap_or("");
            assert!(!text.contains(char::is_control), "{text:?}");
        }
    }
}

/// An image's `/etc/pam.d/sshd` that is an absolute symlink is read in the image, not on this
/// machine (which has no such file).
#[test]
fn an_images_absolute_link_is_followed_inside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let pam = dir.path().join("etc/pam.d");
    std::fs::create_dir_all(&pam).unwrap();
    std::fs::write(
        pam.join("kron-image-only-sshd"),
        "auth requisite pam_unix.so\nauth required pam_kron.so\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/pam.d/kron-image-only-sshd", pam.join("sshd")).unwrap();
    let stack = Stack::load(&Root::new(dir.path()), "sshd");
    assert!(stack.exists());
    assert!(stack.problems.is_empty(), "{:?}", stack.problems);
    assert!(stack.has_kron());
}
