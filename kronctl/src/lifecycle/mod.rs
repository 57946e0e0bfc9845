//! Day-2 commands: `recovery-codes`, `export`, `import` (a kron export, or tokens migrated from
//! google-authenticator and pam_oath) and `export-token`.
//!
//! As everywhere in kronctl, otpd decides: who may do what, whether a code is right, whether a
//! user's token is kept. kronctl reads files and passphrases, checks input early for a clear
//! message, and for migrations leaves out what otpd would refuse (otpd rejects a whole import
//! if any entry is invalid), reporting it as skipped instead.

mod render;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use kron_proto::{ImportResult, TokenImport};
use zeroize::{Zeroize, Zeroizing};

use crate::cli::{
    Cli, ExportArgs, ExportTokenArgs, ImportArgs, ImportSource, RecoveryCodesArgs, check_proof_code,
};
use crate::client::Otpd;
use crate::commands::print;
use crate::error::Error;
use crate::migrate::{self, Found};
use crate::passphrase;
use crate::secret_file::SecretFile;

pub use render::Row;

/// Pixels per QR module in the PNG, as for `enroll`.
const PNG_SCALE: u32 = 6;

const CODE_PROMPT: &str = "Current code from your authenticator app (or a recovery code): ";

pub async fn recovery_codes(cli: &Cli, args: &RecoveryCodesArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let code = match &args.code {
        Some(code) => Zeroizing::new(code.clone()),
        None if is_self_service(args.user.as_deref()) => prompt_code()?,
        // Root and administrators acting for someone: otpd wants no code (and decides).
        None => Zeroizing::new(String::new()),
    };
    let codes = Zeroizing::new(
        otpd.recovery_codes(args.user.as_deref().unwrap_or(""), &code)
            .await?,
    );
    let mut text = if cli.json {
        render::recovery_json(args.user.as_deref(), &codes)
    } else {
        render::recovery_human(args.user.as_deref(), &codes)
    };
    let printed = print(&text);
    text.zeroize();
    printed
}

pub async fn export(cli: &Cli, args: &ExportArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    // Before the passphrase is asked: a path that cannot be used is refused at once, and the
    // still empty file is removed again if anything below fails.
    let file = SecretFile::create(&args.file)?;
    let pass = passphrase::passphrase(args.passphrase_file.as_deref(), true)?;
    // otpd refuses it too; saying so here spares the round trip.
    kron_common::passphrase::check_strength(&pass).map_err(Error::Usage)?;
    let data = otpd
        .export(args.user.as_deref().unwrap_or(""), &pass)
        .await?;
    drop(pass);
    file.finish(&data)?;
    print(&if cli.json {
        render::export_json(&args.file, args.user.as_deref(), data.len())
    } else {
        render::export_human(&args.file, args.user.as_deref(), data.len())
    })
}

pub async fn import(cli: &Cli, args: &ImportArgs) -> Result<(), Error> {
    // Already checked by cli::parse_from; checked again so this never guesses.
    let rows = match args.source().map_err(Error::Usage)? {
        ImportSource::Backup(path) => import_backup(cli, args, &path).await?,
        ImportSource::GoogleAuthenticator { paths, all_homes } => {
            // Files (and the account list) are read before the D-Bus connection exists.
            let found = migrate::google_sources(&paths, all_homes);
            import_found(cli, args, found).await?
        }
        ImportSource::OathUsersfile(path) => {
            let found = migrate::oath_source(&path);
            import_found(cli, args, found).await?
        }
    };
    print(&if cli.json {
        render::import_json(&rows, args.dry_run)
    } else {
        render::import_human(&rows, args.dry_run)
    })
}

async fn import_backup(cli: &Cli, args: &ImportArgs, path: &Path) -> Result<Vec<Row>, Error> {
    let data = read_backup(path)?;
    let otpd = Otpd::connect(&cli.bus).await?;
    let pass = passphrase::passphrase(args.passphrase_file.as_deref(), false)?;
    let results = otpd
        .import(&data, &pass, args.replace, args.dry_run)
        .await?;
    Ok(results.into_iter().map(Row::from_otpd).collect())
}

/// Sends the usable tokens of `found` to otpd and merges its answers into one report, in
/// the order the entries were found.
async fn import_found(
    cli: &Cli,
    args: &ImportArgs,
    mut found: Vec<Found>,
) -> Result<Vec<Row>, Error> {
    migrate::skip_duplicates(&mut found);
    let mut tokens: Vec<TokenImport> = found
        .iter()
        .filter_map(|entry| {
            let token = entry.parsed.token.as_ref().ok()?;
            Some(migrate::to_import(&entry.user, token))
        })
        .collect();
    let sent = async {
        let otpd = Otpd::connect(&cli.bus).await?;
        otpd.import_tokens(&tokens, args.replace, args.dry_run)
            .await
    }
    .await;
    let users: Vec<String> = tokens.iter().map(|t| t.user.clone()).collect();
    wipe(&mut tokens);
    merge(found, &users, sent?)
}

/// One row per entry found: otpd's answer for those sent (`users`, in order), the local
/// reason for the others.
fn merge(
    found: Vec<Found>,
    users: &[String],
    results: Vec<ImportResult>,
) -> Result<Vec<Row>, Error> {
    let answered_in_order = results.len() == users.len()
        && results
            .iter()
            .zip(users)
            .all(|(result, user)| result.user == *user);
    if !answered_in_order {
        return Err(Error::Protocol(
            "otpd's import report does not match the tokens sent".into(),
        ));
    }
    let mut results = results.into_iter();
    Ok(found
        .into_iter()
        .map(|entry| {
            let source = Some(entry.source);
            match entry.parsed.token {
                Ok(_) => {
                    let result = results.next().expect("counted above");
                    Row {
                        source,
                        notes: entry.parsed.notes,
                        ..Row::from_otpd(result)
                    }
                }
                Err(reason) => Row {
                    user: entry.user,
                    outcome: "skipped".into(),
                    reason,
                    source,
                    notes: entry.parsed.notes,
                },
            }
        })
        .collect())
}

pub async fn export_token(cli: &Cli, args: &ExportTokenArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let png_file = args.png.as_deref().map(SecretFile::create).transpose()?;
    let code = match &args.code {
        Some(code) => Zeroizing::new(code.clone()),
        None => prompt_code()?,
    };
    let uri = Zeroizing::new(otpd.export_token(&code).await?);
    if let Some(file) = png_file {
        let mut image = kron_common::qr::png(&uri, PNG_SCALE).map_err(|reason| Error::Io {
            what: "cannot render the QR code as PNG".into(),
            source: std::io::Error::other(reason),
        })?;
        let written = file.finish(&image);
        image.zeroize();
        written?;
    }
    let mut text = if cli.json {
        render::export_token_json(&uri, args.png.as_deref())
    } else {
        let mut qr = kron_common::qr::terminal(&uri).ok();
        let text = render::export_token_human(&uri, qr.as_deref(), args.png.as_deref());
        qr.zeroize();
        text
    };
    let printed = print(&text);
    text.zeroize();
    printed
}

/// Whether renewing `user`'s recovery codes is self-service, which needs a current code: the
/// caller is not root and names nobody, or themself. (otpd knows the admin group; an
/// administrator renewing their own set is asked for a code too, which otpd accepts.)
fn is_self_service(user: Option<&str>) -> bool {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return false;
    }
    match user {
        None => true,
        Some(user) => nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .is_some_and(|me| me.name == user),
    }
}

fn prompt_code() -> Result<Zeroizing<String>, Error> {
    let code = passphrase::code(CODE_PROMPT)?;
    check_proof_code(&code).map_err(Error::Usage)?;
    Ok(code)
}

/// An export file: a regular file (symlinks followed: it is the administrator's own path) of
/// at most the size otpd accepts.
fn read_backup(path: &Path) -> Result<Vec<u8>, Error> {
    let limit = kron_proto::MAX_BACKUP_BYTES as u64;
    let fail = |source| Error::Io {
        what: format!("cannot read {}", path.display()),
        source,
    };
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut data = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut data).map_err(fail)?;
    if data.len() as u64 > limit {
        return Err(Error::Usage(format!(
            "{} is larger than {limit} bytes: not a kron export",
            path.display()
        )));
    }
    Ok(data)
}

fn wipe(tokens: &mut [TokenImport]) {
    for token in tokens {
        token.secret.zeroize();
        token.recovery_codes.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::Parsed;

    fn found(user: &str, ok: bool) -> Found {
        let token = if ok {
            migrate::google::parse(b"QIYPSYQ6RMBXKMBSNHIOWV5BBI\n\" TOTP_AUTH\n").token
        } else {
            Err("unsupported: HOTP".into())
        };
        Found {
            user: user.into(),
            source: format!("/src/{user}"),
            parsed: Parsed {
                token,
                notes: vec![format!("note {user}")],
            },
        }
    }

    fn result(user: &str, outcome: &str) -> ImportResult {
        ImportResult {
            user: user.into(),
            outcome: outcome.into(),
            reason: if outcome == "skipped" {
                "already enrolled".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn local_skips_and_otpd_answers_merge_in_order() {
        let rows = merge(
            vec![found("a", true), found("b", false), found("c", true)],
            &["a".into(), "c".into()],
            vec![result("a", "imported"), result("c", "skipped")],
        )
        .unwrap();
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.user.as_str(), r.outcome.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", "imported", ""),
                ("b", "skipped", "unsupported: HOTP"),
                ("c", "skipped", "already enrolled"),
            ]
        );
        assert_eq!(rows[1].source.as_deref(), Some("/src/b"));
        assert_eq!(rows[2].notes, ["note c"]);
    }

    #[test]
    fn a_report_that_does_not_match_is_refused() {
        let wrong_user = merge(
            vec![found("a", true)],
            &["a".into()],
            vec![result("x", "imported")],
        );
        assert!(matches!(wrong_user, Err(Error::Protocol(_))));
        let missing = merge(vec![found("a", true)], &["a".into()], Vec::new());
        assert!(matches!(missing, Err(Error::Protocol(_))));
    }

    #[test]
    fn backups_must_be_regular_files() {
        assert!(matches!(read_backup(Path::new("/")), Err(Error::Usage(_))));
        assert!(matches!(
            read_backup(Path::new("/nonexistent/kron")),
            Err(Error::Io { .. })
        ));
    }
}
