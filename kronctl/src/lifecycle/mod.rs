//! Day-2 commands: `recovery-codes`, `export`, `import` (a kron export, or tokens migrated from
//! google-authenticator and pam_oath) and `export-token`.
//!
//! As everywhere in kronctl, otpd decides: who may do what, whether a code is right, whether a
//! user's token is kept. kronctl reads files and passphrases, checks input early for a clear
//! message, and for migrations leaves out what otpd would refuse (otpd rejects a whole import
//! if any entry is invalid), reporting it as skipped instead.
//!
//! - `mod.rs`: the four commands, and merging otpd's import report with what was skipped here
//! - `render.rs`: their output as text or JSON
#![forbid(unsafe_code)]

mod render;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use kron_proto::{ImportResult, TokenImport};
use zeroize::{Zeroize, Zeroizing};

use crate::cli::{
    Cli, ExportArgs, ExportTokenArgs, ImportArgs, ImportSource, RecoveryCodesArgs, check_proof_code,
};
use crate::client::Otpd;
use crate::error::Error;
use crate::migrate::{self, Found};
use crate::output::{print, print_secret, stdout_error};
use crate::passphrase;
use crate::progress::{Progress, Unit};
use crate::secret_file::SecretFile;

pub use render::{ImportReport, Row};

/// Tokens sent to otpd in one `ImportTokens` call: each call is answered in well under a
/// second, so 10,000 users never meet the call timeout, and a report comes batch by batch.
pub const IMPORT_BATCH: usize = 500;

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
    print_secret(if cli.json {
        render::recovery_json(args.user.as_deref(), &codes)
    } else {
        render::recovery_human(args.user.as_deref(), &codes)
    })
}

pub async fn export(cli: &Cli, args: &ExportArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    // Before the passphrase is asked: a path that cannot be used is refused at once, and the
    // file is removed again if anything below fails.
    let mut file = SecretFile::create(&args.file)?;
    let pass = passphrase::passphrase(args.passphrase_file.as_deref(), true)?;
    // otpd refuses it too; saying so here spares the round trip.
    kron_common::passphrase::check_strength(&pass).map_err(Error::Usage)?;
    let handle = otpd
        .export_begin(args.user.as_deref().unwrap_or(""), &pass)
        .await?;
    drop(pass);
    // Piece by piece: a store of any size, never one D-Bus message, never all in memory.
    let mut progress = Progress::new("exporting", Unit::Bytes, None);
    let mut bytes = 0;
    loop {
        let (chunk, _users, done) = otpd.export_next(&handle).await?;
        file.write(&chunk)?;
        bytes += chunk.len();
        progress.set(bytes as u64);
        if done {
            break;
        }
    }
    progress.finish();
    file.finish(&[])?;
    print(&if cli.json {
        render::export_json(&args.file, args.user.as_deref(), bytes)
    } else {
        render::export_human(&args.file, args.user.as_deref(), bytes)
    })
}

pub async fn import(cli: &Cli, args: &ImportArgs) -> Result<(), Error> {
    // Already checked by cli::parse_from; checked again so this never guesses.
    let source = args.source().map_err(Error::Usage)?;
    let mut report = ImportReport::start(std::io::stdout().lock(), cli.json, args.dry_run)
        .map_err(stdout_error)?;
    let done = match source {
        ImportSource::Backup(path) => import_backup(cli, args, &path, &mut report).await,
        ImportSource::GoogleAuthenticator { paths, all_homes } => {
            // Files (and the account list) are read before the D-Bus connection exists.
            let found = migrate::google_sources(&paths, all_homes);
            import_found(cli, args, found, &mut report).await
        }
        ImportSource::OathUsersfile(path) => {
            let found = migrate::oath_source(&path);
            import_found(cli, args, found, &mut report).await
        }
    };
    // What was done is reported even when a later batch failed.
    if done.is_ok() || report.rows() > 0 {
        drop(report.finish().map_err(stdout_error)?);
    }
    done
}

/// Users stored per `ImportApply` call.
const APPLY_BATCH: u32 = 1000;

/// Sends the file to otpd piece by piece; once otpd has checked all of it, has the users
/// stored a batch at a time and reports them as they come.
async fn import_backup<W: Write>(
    cli: &Cli,
    args: &ImportArgs,
    path: &Path,
    report: &mut ImportReport<W>,
) -> Result<(), Error> {
    let (mut file, size) = open_backup(path)?;
    let otpd = Otpd::connect(&cli.bus).await?;
    let pass = passphrase::passphrase(args.passphrase_file.as_deref(), false)?;
    let handle = otpd.import_begin(&pass, args.replace, args.dry_run).await?;
    drop(pass);
    let mut progress = Progress::new("sending", Unit::Bytes, Some(size));
    let mut chunk = vec![0u8; kron_proto::MAX_CHUNK_BYTES];
    loop {
        let read = read_full(&mut file, &mut chunk).map_err(|source| Error::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })?;
        if read == 0 {
            break;
        }
        otpd.import_chunk(&handle, &chunk[..read]).await?;
        progress.advance(read as u64);
    }
    progress.finish();
    let users = otpd.import_end(&handle).await?;
    let mut progress = Progress::new("importing", Unit::Users, Some(users));
    loop {
        let (results, done) = otpd.import_apply(&handle, APPLY_BATCH).await?;
        progress.advance(results.len() as u64);
        for result in results {
            report.row(&Row::from_otpd(result)).map_err(stdout_error)?;
        }
        if done {
            break;
        }
    }
    progress.finish();
    Ok(())
}

/// Fills `buffer` as far as the file goes.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Sends the usable tokens of `found` to otpd in batches of [`IMPORT_BATCH`], and reports
/// otpd's answers merged with what kronctl skipped itself, in the order the entries were
/// found, batch by batch.
async fn import_found<W: Write>(
    cli: &Cli,
    args: &ImportArgs,
    mut found: Vec<Found>,
    report: &mut ImportReport<W>,
) -> Result<(), Error> {
    migrate::skip_duplicates(&mut found);
    let usable = found.iter().filter(|f| f.parsed.token.is_ok()).count();
    let otpd = Otpd::connect(&cli.bus).await?;
    let mut progress = Progress::new("importing", Unit::Users, Some(usable as u64));
    let mut entries = found.into_iter().peekable();
    // At least one call, even with nothing to send: otpd decides who may import.
    let mut first = true;
    while first || entries.peek().is_some() {
        first = false;
        let mut batch = Vec::new();
        let mut tokens: Vec<TokenImport> = Vec::new();
        while tokens.len() < IMPORT_BATCH {
            let Some(entry) = entries.next() else { break };
            if let Ok(token) = &entry.parsed.token {
                tokens.push(migrate::to_import(&entry.user, token));
            }
            batch.push(entry);
        }
        let sent = otpd
            .import_tokens(&tokens, args.replace, args.dry_run)
            .await;
        let users: Vec<String> = tokens.iter().map(|t| t.user.clone()).collect();
        wipe(&mut tokens);
        for row in merge(batch, &users, sent?)? {
            report.row(&row).map_err(stdout_error)?;
        }
        progress.advance(users.len() as u64);
    }
    progress.finish();
    Ok(())
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
        file.finish_qr_png(&uri)?;
    }
    let text = if cli.json {
        render::export_token_json(&uri, args.png.as_deref())
    } else {
        let mut qr = kron_common::qr::terminal(&uri).ok();
        let text = render::export_token_human(&uri, qr.as_deref(), args.png.as_deref());
        qr.zeroize();
        text
    };
    print_secret(text)
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

/// An export file, opened: a regular file (symlinks followed: it is the administrator's own
/// path), with its size for the progress line.
fn open_backup(path: &Path) -> Result<(File, u64), Error> {
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
    Ok((file, meta.len()))
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
        assert!(matches!(open_backup(Path::new("/")), Err(Error::Usage(_))));
        assert!(matches!(
            open_backup(Path::new("/nonexistent/kron")),
            Err(Error::Io { .. })
        ));
    }
}
