//! Unit tests of the sshd_config reader and the sshd checks, on config trees in temporary
//! directories.
#![forbid(unsafe_code)]

use super::checks::{AUTH_KEYWORDS, check};
use super::glob::wildcard_match;
use super::parse::{
    KBD_INTERACTIVE, METHODS, PUBKEY, SSHD_CONFIG, SshdConfig, USE_PAM, split_line,
};
use crate::doctor::config::Policy;
use crate::doctor::files::Root;
use crate::doctor::pam::Stack;
use crate::doctor::report::{Finding, Findings, Severity};

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Self {
        Tree(tempfile::tempdir().unwrap())
    }
    fn write(&self, path: &str, text: &str) -> &Self {
        let file = self.0.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
        self
    }
    fn root(&self) -> Root {
        Root::new(self.0.path())
    }
    fn sshd(&self) -> SshdConfig {
        SshdConfig::load(&self.root()).unwrap()
    }
}

fn policy(text: &str) -> Policy {
    Policy {
        config: Some(kron_common::config::Config::parse(text, "otpd.toml").unwrap()),
        origin: "otpd.toml".into(),
    }
}

const REQUIRE: &str = "default_mode = \"require\"\n";

fn findings(tree: &Tree, otpd_toml: &str) -> Vec<Finding> {
    let stack = Stack::load(&tree.root(), "sshd");
    let mut out = Findings::new(&[]);
    check(&tree.root(), &policy(otpd_toml), &stack, &mut out);
    out.into_vec()
}

fn severity_of(findings: &[Finding], check: &str) -> Severity {
    findings
        .iter()
        .filter(|f| f.check == check)
        .map(|f| f.severity)
        .max()
        .unwrap_or_else(|| panic!("no {check} in {findings:#?}"))
}

const KRON_STACK: &str = "@include common-auth\nauth required pam_kron.so\n";
const GOOD: &str = "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication yes\nUsePAM yes\nAuthenticationMethods publickey,keyboard-interactive\n";
const NO_ROOT: &str = "PermitRootLogin no\n";

#[test]
fn lines_split_like_sshd() {
    assert_eq!(split_line("  # comment"), None);
    assert_eq!(split_line(""), None);
    assert_eq!(
        split_line("UsePAM=no"),
        Some(("UsePAM".into(), vec!["no".into()]))
    );
    assert_eq!(
        split_line("AuthenticationMethods = publickey,password  publickey # why"),
        Some((
            "AuthenticationMethods".into(),
            vec!["publickey,password".into(), "publickey".into()]
        ))
    );
    assert_eq!(
        split_line("Banner \"/etc/my banner\""),
        Some(("Banner".into(), vec!["/etc/my banner".into()]))
    );
}

#[test]
fn wildcards_match_like_fnmatch() {
    let m = |p: &str, n: &str| wildcard_match(p.as_bytes(), n.as_bytes());
    assert!(m("*.conf", "10-kron.conf"));
    assert!(!m("*.conf", "10-kron.conf.bak"));
    assert!(m("?0-*", "10-x"));
    assert!(m("[0-9]*", "5x"));
    assert!(!m("[!0-9]*", "5x"));
    assert!(m("x", "x"));
    assert!(!m("x", "xy"));
}

#[test]
fn first_value_wins_across_includes() {
    let tree = Tree::new();
    tree.write(SSHD_CONFIG, "Include sshd_config.d/*.conf\nUsePAM yes\n")
        .write("/etc/ssh/sshd_config.d/20-late.conf", "usepam yes\n")
        .write("/etc/ssh/sshd_config.d/10-early.conf", "UsePAM no\n")
        .write("/etc/ssh/sshd_config.d/ignored.txt", "UsePAM yes\n");
    let config = tree.sshd();
    assert_eq!(config.files, 3);
    let first = config.global(USE_PAM).unwrap();
    assert_eq!(first.args, ["no"]);
    assert_eq!(first.at.file, "/etc/ssh/sshd_config.d/10-early.conf");
    assert!(!config.flag(USE_PAM, false).0);
}

#[test]
fn match_blocks_end_with_their_file_and_own_their_includes() {
    let tree = Tree::new();
    tree.write(
        SSHD_CONFIG,
        "Include /etc/ssh/sshd_config.d/*.conf\nPubkeyAuthentication yes\nMatch User backup\n  Include /etc/ssh/extra.conf\n  PasswordAuthentication no\n",
    )
    .write(
        "/etc/ssh/sshd_config.d/a.conf",
        "Match Address 10.0.0.0/8\nAuthenticationMethods publickey\n",
    )
    .write("/etc/ssh/extra.conf", "KbdInteractiveAuthentication no\n");
    let config = tree.sshd();
    let pubkey = config.global(PUBKEY).unwrap();
    assert_eq!(
        pubkey.at.line, 2,
        "global again after the included file's Match"
    );
    assert!(config.global(METHODS).is_none());
    assert!(config.global(KBD_INTERACTIVE).is_none());
    let overrides = config.overrides(&AUTH_KEYWORDS);
    assert_eq!(overrides.len(), 2);
    assert_eq!(
        overrides[0].block.as_ref().unwrap().criteria,
        "Address 10.0.0.0/8"
    );
    assert_eq!(overrides[1].block.as_ref().unwrap().criteria, "User backup");
    assert_eq!(overrides[1].keyword, KBD_INTERACTIVE);
}

#[test]
fn unreadable_includes_and_loops_are_problems() {
    let tree = Tree::new();
    tree.write(SSHD_CONFIG, "Include /etc/ssh/loop.conf\n")
        .write("/etc/ssh/loop.conf", "Include /etc/ssh/loop.conf\n");
    let config = tree.sshd();
    assert_eq!(config.problems.len(), 1, "{:?}", config.problems);
    assert!(config.problems[0].contains("deeper than 16"));
}

#[test]
fn good_config_passes() {
    let tree = Tree::new();
    tree.write(SSHD_CONFIG, &format!("{NO_ROOT}{GOOD}"))
        .write("/etc/pam.d/sshd", KRON_STACK)
        .write("/etc/pam.d/common-auth", "auth requisite pam_unix.so\n");
    let found = findings(&tree, REQUIRE);
    assert!(
        found.iter().all(|f| f.severity == Severity::Ok),
        "{found:#?}"
    );
}

#[test]
fn use_pam_no_or_unset_is_an_error() {
    let tree = Tree::new();
    tree.write(SSHD_CONFIG, &GOOD.replace("UsePAM yes", "UsePAM no"))
        .write("/etc/pam.d/sshd", KRON_STACK);
    assert_eq!(
        severity_of(&findings(&tree, REQUIRE), "sshd-usepam"),
        Severity::Error
    );
    tree.write(SSHD_CONFIG, &GOOD.replace("UsePAM yes", ""));
    let found = findings(&tree, REQUIRE);
    assert_eq!(severity_of(&found, "sshd-usepam"), Severity::Error);
    assert!(found.iter().any(|f| f.message.contains("default is no")));
    // Nobody is asked for codes over SSH and pam_kron is not in the stack: not needed.
    tree.write("/etc/pam.d/sshd", "@include common-auth\n");
    assert_eq!(
        severity_of(
            &findings(&tree, "default_mode = \"exempt\"\n"),
            "sshd-usepam"
        ),
        Severity::Ok
    );
}

#[test]
fn debian_default_kbd_interactive_no_is_an_error() {
    let tree = Tree::new();
    tree.write(
        SSHD_CONFIG,
        &GOOD.replace(
            "KbdInteractiveAuthentication yes",
            "KbdInteractiveAuthentication no",
        ),
    )
    .write("/etc/pam.d/sshd", KRON_STACK);
    assert_eq!(
        severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
        Severity::Error
    );
    tree.write(
        SSHD_CONFIG,
        &GOOD.replace(
            "KbdInteractiveAuthentication yes",
            "ChallengeResponseAuthentication no",
        ),
    );
    assert_eq!(
        severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
        Severity::Error
    );
    tree.write("/etc/pam.d/sshd", "@include common-auth\n");
    assert_eq!(
        severity_of(&findings(&tree, REQUIRE), "sshd-kbdinteractive"),
        Severity::Warning,
        "pam_kron is missing (pam-sshd says so); once added it needs the prompt"
    );
    assert_eq!(
        severity_of(
            &findings(&tree, "default_mode = \"exempt\"\n"),
            "sshd-kbdinteractive"
        ),
        Severity::Ok,
        "nobody needs a code over SSH"
    );
}

#[test]
fn public_keys_alone_bypass_codes() {
    let tree = Tree::new();
    tree.write("/etc/pam.d/sshd", KRON_STACK);
    for sshd_config in [
        "UsePAM yes\n",
        "UsePAM yes\nAuthenticationMethods any\n",
        "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive publickey\n",
        "UsePAM yes\nPubkeyAuthentication no\nGSSAPIAuthentication yes\n",
    ] {
        tree.write(SSHD_CONFIG, sshd_config);
        let found = findings(&tree, REQUIRE);
        assert_eq!(
            severity_of(&found, "sshd-publickey"),
            Severity::Error,
            "{sshd_config}"
        );
        assert_eq!(
            severity_of(&findings(&tree, ""), "sshd-publickey"),
            Severity::Warning,
            "optional by default: {sshd_config}"
        );
        assert_eq!(
            severity_of(
                &findings(&tree, "default_mode = \"exempt\"\n"),
                "sshd-publickey"
            ),
            Severity::Ok
        );
    }
    for sshd_config in [
        "UsePAM yes\nPubkeyAuthentication no\n",
        "UsePAM yes\nAuthenticationMethods keyboard-interactive:pam\n",
        "UsePAM yes\nAuthenticationMethods publickey,password publickey,keyboard-interactive\n",
        "UsePAM yes\nPubkeyAuthentication no\nAuthenticationMethods publickey hostbased,keyboard-interactive\n",
    ] {
        tree.write(SSHD_CONFIG, sshd_config);
        assert_eq!(
            severity_of(&findings(&tree, REQUIRE), "sshd-publickey"),
            Severity::Ok,
            "{sshd_config}"
        );
    }
}

const KEY_THEN_CODE_STACK: &str = "auth required pam_kron.so\nauth required pam_permit.so\n";
const NO_FACTOR: &str = "sshd-no-first-factor";

#[test]
fn keyboard_interactive_alone_on_a_kron_only_stack_needs_no_factor() {
    let tree = Tree::new();
    tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_STACK);
    for sshd_config in [
        "UsePAM yes\nAuthenticationMethods keyboard-interactive\n",
        "UsePAM yes\nAuthenticationMethods keyboard-interactive:pam\n",
        "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n",
        "UsePAM yes\nAuthenticationMethods any\n",
        "UsePAM yes\n",
        // The password method runs the same stack and any password passes.
        "UsePAM yes\nKbdInteractiveAuthentication no\n",
        "UsePAM yes\nAuthenticationMethods password\n",
    ] {
        tree.write(SSHD_CONFIG, sshd_config);
        for (otpd_toml, expected) in [
            ("", Severity::Error),
            ("default_mode = \"exempt\"\n", Severity::Error),
            (
                "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"optional\"\nservices = [\"sshd\"]\n",
                Severity::Error,
            ),
            ("default_mode = \"enroll\"\n", Severity::Error),
            (REQUIRE, Severity::Warning),
            // Optional only for sudo: every sshd login needs a code.
            (
                "default_mode = \"require\"\n[[group]]\nname = \"ops\"\nmode = \"optional\"\nservices = [\"sudo\"]\n",
                Severity::Warning,
            ),
        ] {
            assert_eq!(
                severity_of(&findings(&tree, otpd_toml), NO_FACTOR),
                expected,
                "{sshd_config}{otpd_toml}"
            );
        }
    }
    tree.write(
        SSHD_CONFIG,
        "UsePAM yes\nAuthenticationMethods keyboard-interactive\n",
    );
    let found = findings(&tree, "");
    let finding = found.iter().find(|f| f.check == NO_FACTOR).unwrap();
    assert!(
        finding.message.contains(
            "AuthenticationMethods keyboard-interactive (/etc/ssh/sshd_config:2) lets keyboard-interactive alone log in"
        ) && finding
            .message
            .contains("pam_permit.so (`required`, /etc/pam.d/sshd:2)")
            && finding.message.contains("optional"),
        "{finding:?}"
    );
    assert_eq!(
        finding.fix.as_deref(),
        Some(
            "use `AuthenticationMethods publickey,keyboard-interactive` in /etc/ssh/sshd_config (then `systemctl reload ssh`), or put the password module (`@include common-auth`) before pam_kron.so in /etc/pam.d/sshd"
        )
    );
    let unloadable = Policy {
        config: None,
        origin: "otpd.toml".into(),
    };
    let mut out = Findings::new(&[]);
    check(
        &tree.root(),
        &unloadable,
        &Stack::load(&tree.root(), "sshd"),
        &mut out,
    );
    assert_eq!(severity_of(&out.into_vec(), NO_FACTOR), Severity::Error);
    // sshd-publickey does not suggest keyboard-interactive alone for this stack.
    tree.write(SSHD_CONFIG, "UsePAM yes\n");
    let found = findings(&tree, REQUIRE);
    let publickey = found.iter().find(|f| f.check == "sshd-publickey").unwrap();
    assert!(
        !publickey
            .fix
            .as_deref()
            .unwrap()
            .contains("or `keyboard-interactive`"),
        "{publickey:?}"
    );
    // Without pam_kron the stack lets anyone in, whatever the policy.
    tree.write("/etc/pam.d/sshd", "auth required pam_permit.so\n");
    let found = findings(&tree, REQUIRE);
    assert_eq!(severity_of(&found, NO_FACTOR), Severity::Error);
    assert!(
        found
            .iter()
            .any(|f| f.check == NO_FACTOR && f.message.contains("anyone who knows a user name")),
        "{found:#?}"
    );
}

#[test]
fn a_first_factor_or_a_key_keeps_pam_logins_safe() {
    let tree = Tree::new();
    tree.write("/etc/pam.d/common-auth", "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_permit.so\n");
    // Password then code (docs/sshd.md): keyboard-interactive alone, the password in PAM.
    tree.write("/etc/pam.d/sshd", KRON_STACK).write(
        SSHD_CONFIG,
        "UsePAM yes\nAuthenticationMethods keyboard-interactive\nPasswordAuthentication no\n",
    );
    for otpd_toml in ["", "default_mode = \"exempt\"\n", REQUIRE] {
        let found = findings(&tree, otpd_toml);
        assert_eq!(severity_of(&found, NO_FACTOR), Severity::Ok, "{found:#?}");
    }
    let found = findings(&tree, "");
    let finding = found.iter().find(|f| f.check == NO_FACTOR).unwrap();
    assert!(finding.message.contains("(pam_unix.so)"), "{finding:?}");
    tree.write(SSHD_CONFIG, "UsePAM yes\n");
    let found = findings(&tree, REQUIRE);
    let publickey = found.iter().find(|f| f.check == "sshd-publickey").unwrap();
    assert!(
        publickey
            .fix
            .as_deref()
            .unwrap()
            .contains("(or `keyboard-interactive`: /etc/pam.d/sshd checks a password)"),
        "{publickey:?}"
    );
    // Key then code: the key is the first factor.
    tree.write("/etc/pam.d/sshd", KEY_THEN_CODE_STACK);
    for sshd_config in [
        GOOD,
        "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive publickey,password\n",
        "UsePAM yes\nKbdInteractiveAuthentication no\nPasswordAuthentication no\n",
        "UsePAM no\n",
        "UsePAM yes\nAuthenticationMethods keyboard-interactive\nKbdInteractiveAuthentication no\n",
    ] {
        tree.write(SSHD_CONFIG, sshd_config);
        assert_eq!(
            severity_of(&findings(&tree, ""), NO_FACTOR),
            Severity::Ok,
            "{sshd_config}"
        );
    }
    // Skipped on request.
    tree.write(SSHD_CONFIG, "UsePAM yes\n");
    let mut out = Findings::new(&[NO_FACTOR.to_owned()]);
    check(
        &tree.root(),
        &policy(""),
        &Stack::load(&tree.root(), "sshd"),
        &mut out,
    );
    assert!(out.into_vec().iter().all(|f| f.check != NO_FACTOR));
}

#[test]
fn root_with_prohibit_password_cannot_do_keyboard_interactive() {
    let tree = Tree::new();
    tree.write(SSHD_CONFIG, GOOD)
        .write("/etc/pam.d/sshd", KRON_STACK);
    let stack = Stack::load(&tree.root(), "sshd");
    let mut out = Findings::new(&[]);
    let facts = check(&tree.root(), &policy(REQUIRE), &stack, &mut out);
    assert!(facts.installed);
    // GOOD has no PermitRootLogin: prohibit-password by default, and methods need PAM.
    assert_eq!(
        severity_of(&out.into_vec(), "sshd-root-login"),
        Severity::Warning
    );
    assert!(!facts.root_may_log_in);

    tree.write(SSHD_CONFIG, &format!("PermitRootLogin yes\n{GOOD}"));
    let mut out = Findings::new(&[]);
    assert!(check(&tree.root(), &policy(REQUIRE), &stack, &mut out).root_may_log_in);
    tree.write(SSHD_CONFIG, &format!("PermitRootLogin no\n{GOOD}"));
    let mut out = Findings::new(&[]);
    assert!(!check(&tree.root(), &policy(REQUIRE), &stack, &mut out).root_may_log_in);
    assert_eq!(
        severity_of(&out.into_vec(), "sshd-root-login"),
        Severity::Ok
    );
}

#[test]
fn match_overrides_are_warnings() {
    let tree = Tree::new();
    tree.write(
        SSHD_CONFIG,
        &format!("{GOOD}Match User backup\n    AuthenticationMethods publickey\n"),
    )
    .write("/etc/pam.d/sshd", KRON_STACK);
    let found = findings(&tree, REQUIRE);
    assert_eq!(severity_of(&found, "sshd-match"), Severity::Warning);
    assert_eq!(
        severity_of(&found, "sshd-publickey"),
        Severity::Ok,
        "global is fine"
    );
    let warning = found.iter().find(|f| f.check == "sshd-match").unwrap();
    assert!(
        warning
            .message
            .contains("Match User backup (/etc/ssh/sshd_config:5)"),
        "{warning:?}"
    );
}

#[test]
fn no_sshd_skips_the_checks() {
    let tree = Tree::new();
    let found = findings(&tree, REQUIRE);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].check, "sshd-config");
    assert_eq!(found[0].severity, Severity::Ok);
}
