//! Tests of the command line: parsing, help, bounds.

use super::*;
use clap::FromArgMatches;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    parse_from(std::iter::once("kronctl").chain(args.iter().copied()))
}

fn confirm_target(args: &[&str]) -> ConfirmTarget {
    match parse(args).unwrap().command {
        Command::Confirm(confirm) => confirm.target().unwrap(),
        other => panic!("expected confirm, got {other:?}"),
    }
}

#[test]
fn definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn confirm_with_one_positional_is_the_code_for_self() {
    let target = confirm_target(&["confirm", "123456"]);
    assert_eq!(
        target,
        ConfirmTarget {
            user: None,
            code: "123456".into()
        }
    );
}

#[test]
fn confirm_with_two_positionals_is_user_then_code() {
    let target = confirm_target(&["confirm", "alice", "12345678"]);
    assert_eq!(
        target,
        ConfirmTarget {
            user: Some("alice".into()),
            code: "12345678".into()
        }
    );
}

#[test]
fn confirm_refuses_bad_codes_without_echoing_them() {
    for args in [
        &["confirm", "12345"][..],
        &["confirm", "1234567"],
        &["confirm", "123456789"],
        &["confirm", "12a456"],
        &["confirm", "12a456b"],
        &["confirm", "١٢٣٤٥٦"], // Arabic-Indic digits are not ASCII digits
        &["confirm", "alice", "bob"],
        &["confirm", "alice", ""],
    ] {
        let err = parse(args).expect_err(&format!("{args:?} must be refused"));
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}");
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("12a456"));
    }
}

#[test]
fn confirm_with_only_a_user_says_the_code_is_missing() {
    let err = parse(&["confirm", "alice"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    assert!(
        err.to_string().contains("missing CODE after USER alice"),
        "{err}"
    );
}

#[test]
fn confirm_refuses_bad_user_and_wrong_arity() {
    let err = parse(&["confirm", "a:b", "123456"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    assert!(parse(&["confirm"]).is_err());
    assert_eq!(
        parse(&["confirm", "alice", "123456", "extra"])
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownArgument
    );
}

#[test]
fn user_arguments_are_validated() {
    for args in [
        &["status", "a b"][..],
        &["reset", "-rf"],
        &["unlock", "../x"],
        &["enroll", ""],
    ] {
        assert!(parse(args).is_err(), "{args:?} must be refused");
    }
    assert!(parse(&["reset"]).is_err(), "reset needs a USER");
    assert!(parse(&["unlock"]).is_err(), "unlock needs a USER");
}

#[test]
fn enroll_takes_optional_user_and_png() {
    let cli = parse(&["enroll", "bob", "--png", "/tmp/q.png", "--json"]).unwrap();
    assert!(cli.json);
    match cli.command {
        Command::Enroll {
            user,
            png,
            send,
            link,
            via,
        } => {
            assert_eq!(user.as_deref(), Some("bob"));
            assert_eq!(png, Some(PathBuf::from("/tmp/q.png")));
            assert_eq!((send, link, via), (None, false, None));
        }
        other => panic!("expected enroll, got {other:?}"),
    }
    assert!(matches!(
        parse(&["enroll"]).unwrap().command,
        Command::Enroll {
            user: None,
            png: None,
            send: None,
            link: false,
            via: None,
        }
    ));
    assert!(matches!(
        parse(&["enroll", "bob", "--send", "sms"]).unwrap().command,
        Command::Enroll {
            send: Some(SendKind::Sms),
            ..
        }
    ));
    assert!(
        parse(&["enroll", "--send", "email"]).is_err(),
        "needs a user"
    );
    assert!(parse(&["enroll", "bob", "--send", "fax"]).is_err());
    assert!(parse(&["enroll", "bob", "--send", "email", "--png", "/tmp/q"]).is_err());
}

#[test]
fn enroll_makes_or_sends_links() {
    assert!(matches!(
        parse(&["enroll", "bob", "--link", "--json"])
            .unwrap()
            .command,
        Command::Enroll {
            link: true,
            send: None,
            ..
        }
    ));
    assert!(matches!(
        parse(&["enroll", "bob", "--send", "link", "--via", "sms"])
            .unwrap()
            .command,
        Command::Enroll {
            send: Some(SendKind::Link),
            via: Some(Channel::Sms),
            ..
        }
    ));
    for bad in [
        &["enroll", "--link"][..],
        &["enroll", "bob", "--link", "--send", "email"],
        &["enroll", "bob", "--link", "--png", "/tmp/q"],
        &["enroll", "bob", "--send", "link"],
        &["enroll", "bob", "--send", "email", "--via", "sms"],
        &["enroll", "bob", "--via", "sms"],
        &["enroll", "bob", "--send", "link", "--via", "link"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?} must be refused"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
    assert!(matches!(
        parse(&["revoke-link", "bob"]).unwrap().command,
        Command::RevokeLink { .. }
    ));
    assert!(parse(&["revoke-link"]).is_err());
}

#[test]
fn contact_takes_addresses_or_clears() {
    let Command::Contact(args) =
        parse(&["contact", "bob", "--email", "b@x.example", "--clear-phone"])
            .unwrap()
            .command
    else {
        panic!("expected contact");
    };
    assert_eq!(
        args.changes(),
        [(Channel::Email, "b@x.example"), (Channel::Sms, "")]
    );
    assert!(parse(&["contact", "bob", "--email", "b@x.example", "--clear-email"]).is_err());
    assert!(parse(&["contact"]).is_err());
}

#[test]
fn doctor_takes_root_config_and_skips() {
    let cli = parse(&[
        "doctor",
        "--root",
        "/mnt/image",
        "--config",
        "/tmp/otpd.toml",
        "--skip",
        "clock-sync,otpd-reachable",
        "--skip",
        "admin-lockout",
        "--json",
    ])
    .unwrap();
    assert!(cli.json);
    match cli.command {
        Command::Doctor(args) => {
            assert_eq!(args.root, PathBuf::from("/mnt/image"));
            assert_eq!(args.config, Some(PathBuf::from("/tmp/otpd.toml")));
            assert_eq!(args.skip, ["clock-sync", "otpd-reachable", "admin-lockout"]);
        }
        other => panic!("expected doctor, got {other:?}"),
    }
    match parse(&["doctor"]).unwrap().command {
        Command::Doctor(args) => {
            assert_eq!(args.root, PathBuf::from("/"));
            assert_eq!(args.config, None);
            assert!(args.skip.is_empty());
        }
        other => panic!("expected doctor, got {other:?}"),
    }
    let err = parse(&["doctor", "--skip", "nonsense"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

fn import_source(args: &[&str]) -> Result<ImportSource, clap::Error> {
    match parse(args)?.command {
        Command::Import(import) => Ok(import.source().unwrap()),
        other => panic!("expected import, got {other:?}"),
    }
}

#[test]
fn import_takes_one_backup_or_a_source_flag() {
    assert_eq!(
        import_source(&["import", "b.age", "--replace"]).unwrap(),
        ImportSource::Backup("b.age".into())
    );
    assert_eq!(
        import_source(&["import", "--google-authenticator", "/a", "/b"]).unwrap(),
        ImportSource::GoogleAuthenticator {
            paths: vec!["/a".into(), "/b".into()],
            all_homes: false
        }
    );
    assert_eq!(
        import_source(&[
            "import",
            "--google-authenticator",
            "--all-homes",
            "--dry-run"
        ])
        .unwrap(),
        ImportSource::GoogleAuthenticator {
            paths: Vec::new(),
            all_homes: true
        }
    );
    assert_eq!(
        import_source(&["import", "--oath-usersfile", "/etc/users.oath"]).unwrap(),
        ImportSource::OathUsersfile("/etc/users.oath".into())
    );
    for bad in [
        &["import"][..],
        &["import", "a", "b"],
        &["import", "--google-authenticator"],
        &["import", "--oath-usersfile"],
        &["import", "--oath-usersfile", "a", "b"],
        &["import", "--all-homes"],
        &["import", "--google-authenticator", "--oath-usersfile", "a"],
        &["import", "--oath-usersfile", "a", "--passphrase-file", "p"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?} must be refused"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn lifecycle_commands_parse() {
    match parse(&["recovery-codes", "alice", "--code", "12345-67890"])
        .unwrap()
        .command
    {
        Command::RecoveryCodes(args) => {
            assert_eq!(args.user.as_deref(), Some("alice"));
            assert_eq!(args.code.as_deref(), Some("12345-67890"));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["export", "f.age", "--user", "bob", "--passphrase-file", "p"])
        .unwrap()
        .command
    {
        Command::Export(args) => {
            assert_eq!(args.file, PathBuf::from("f.age"));
            assert_eq!(args.user.as_deref(), Some("bob"));
            assert_eq!(args.passphrase_file, Some(PathBuf::from("p")));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["export-token", "--png", "t.png"]).unwrap().command {
        Command::ExportToken(args) => {
            assert_eq!(args.png, Some(PathBuf::from("t.png")));
            assert_eq!(args.code, None);
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        &["recovery-codes", "--code", "12ab56"][..],
        &["recovery-codes", "--code", "12345"],
        &["export-token", "--code", "1234567890123"],
        &["export"],
        &["export", "f", "--user", "a b"],
        // Never a passphrase on the command line.
        &["export", "f", "--passphrase", "x"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?} must be refused"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
        assert!(!err.to_string().contains("12ab56"));
    }
}

#[test]
fn doctor_check_ids_are_unique_kebab_case() {
    let mut ids = DOCTOR_CHECKS.to_vec();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), DOCTOR_CHECKS.len());
    for id in DOCTOR_CHECKS {
        assert!(
            id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "{id}"
        );
    }
}

#[test]
fn bus_has_the_documented_env_and_default() {
    let cmd = command();
    let bus = cmd.get_arguments().find(|a| a.get_id() == "bus").unwrap();
    assert_eq!(bus.get_env(), Some(std::ffi::OsStr::new(BUS_ENV)));
    assert_eq!(bus.get_default_values(), [DEFAULT_BUS_ADDRESS]);
}

/// Flag vs environment precedence, without mutating this process's environment (which is
/// unsafe while other test threads read it): the same `bus` argument is pointed at `PATH`,
/// a variable that is always set, and must lose against an explicit flag.
#[test]
fn bus_flag_wins_over_environment() {
    let env_value = std::env::var("PATH").expect("PATH is set");
    let parse_with_env = |args: &[&str]| {
        let matches = command()
            .mut_arg("bus", |arg| arg.env("PATH"))
            .try_get_matches_from(std::iter::once("kronctl").chain(args.iter().copied()))
            .unwrap();
        Cli::from_arg_matches(&matches).unwrap()
    };
    assert_eq!(parse_with_env(&["status"]).bus, env_value);
    assert_eq!(
        parse_with_env(&["--bus", "unix:path=/x", "status"]).bus,
        "unix:path=/x"
    );
    // Global flags may also follow the subcommand.
    assert_eq!(
        parse_with_env(&["status", "--bus", "unix:path=/y"]).bus,
        "unix:path=/y"
    );
}

#[test]
fn bus_defaults_without_flag_or_environment() {
    let matches = command()
        .mut_arg("bus", |arg| arg.env("KRON_TEST_VARIABLE_THAT_IS_NEVER_SET"))
        .try_get_matches_from(["kronctl", "list"])
        .unwrap();
    assert_eq!(
        Cli::from_arg_matches(&matches).unwrap().bus,
        DEFAULT_BUS_ADDRESS
    );
}
