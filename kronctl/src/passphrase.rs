//! Reading a secret the person types: the passphrase of an export, or a current code.
//!
//! From `--passphrase-file FILE` (its first line), else from the terminal with echo turned off
//! when stdin is one, else the first line of stdin (scripts: `kronctl export F < pass`). Never
//! from a command-line argument or an environment variable: both are visible to other local
//! users (`/proc/PID/cmdline`, and `environ` to the same user and root) and end up in shell
//! histories and logs.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use kron_common::trust::{self, FinalLink, Kind, Problem};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::sys::terminal::NoEcho;

/// Longest passphrase otpd accepts.
pub const MAX_PASSPHRASE: usize = kron_proto::MAX_PASSPHRASE;
/// Longest code line read (a recovery code with dashes and blanks fits easily).
const MAX_CODE_LINE: usize = 64;

/// The passphrase for an export or import. With `confirm` (a new export typed at a terminal)
/// it is asked twice and must match.
pub fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>, Error> {
    let pass = match file {
        Some(path) => from_file(path)?,
        None if stdin_is_terminal() => {
            let pass = from_terminal("Passphrase: ", MAX_PASSPHRASE)?;
            if confirm && !pass.is_empty() {
                let again = from_terminal("Passphrase again: ", MAX_PASSPHRASE)?;
                if *again != *pass {
                    return Err(Error::Usage(
                        "the passphrases differ; nothing was done".into(),
                    ));
                }
            }
            pass
        }
        None => read_line(&mut io::stdin().lock(), MAX_PASSPHRASE)
            .map_err(|reason| Error::Usage(format!("passphrase from stdin: {reason}")))?,
    };
    if pass.is_empty() {
        return Err(Error::Usage("the passphrase is empty".into()));
    }
    Ok(pass)
}

/// A current code (or a recovery code) for a self-service command, asked at the terminal
/// without echo, or the first line of stdin.
pub fn code(prompt: &str) -> Result<Zeroizing<String>, Error> {
    let code = if stdin_is_terminal() {
        from_terminal(prompt, MAX_CODE_LINE)?
    } else {
        read_line(&mut io::stdin().lock(), MAX_CODE_LINE)
            .map_err(|reason| Error::Usage(format!("code from stdin: {reason}")))?
    };
    Ok(Zeroizing::new(code.trim().to_owned()))
}

/// The first line of a passphrase file, which must be a regular file of root's or the caller's
/// that nobody else may read or write: whoever can write it chooses the key of the backup, and
/// whoever can read it can open the backup (every seed). Checked on the opened file (no final
/// symlink followed, no FIFO waited on), so what is checked is what is read.
fn from_file(path: &Path) -> Result<Zeroizing<String>, Error> {
    secret_line(path, "passphrase file", MAX_PASSPHRASE)
}

/// The first line of a file holding a secret (`what`: "passphrase file", "password file"), at
/// most `max` bytes: a regular file of root's or the caller's that nobody else may read or write
/// (checked on the opened file: no final symlink followed, no FIFO waited on).
pub(crate) fn secret_line(path: &Path, what: &str, max: usize) -> Result<Zeroizing<String>, Error> {
    let file = trusted_file(path, what, Kind::Secret, FinalLink::Refuse)?;
    // The first line only, so a trailing newline (or a comment after it) is not part of it.
    read_line(&mut io::BufReader::new(file), max)
        .map_err(|why| Error::Usage(format!("{what} {}: {why}", path.display())))
}

/// [`secret_line`] without trailing blanks, as otpd reads its own password files.
pub(crate) fn password_line(
    path: &Path,
    what: &str,
    max: usize,
) -> Result<Zeroizing<String>, Error> {
    let line = secret_line(path, what, max)?;
    Ok(Zeroizing::new(line.trim_end().to_owned()))
}

/// Opens `what` at `path` if it is a regular file, root's or the caller's, that nobody else may
/// access (`Kind::Secret`) or change (`Kind::File`), checked on the opened file.
pub(crate) fn trusted_file(
    path: &Path,
    what: &str,
    kind: Kind,
    link: FinalLink,
) -> Result<File, Error> {
    let fix = if kind == Kind::Secret { 600 } else { 644 };
    let opened = trust::open_trusted(path, kind, trust::Owners::root_and_me(), link);
    let (file, _) = opened.map_err(|untrusted| {
        let why = match untrusted.problem {
            Problem::Io(source) => {
                return Error::Io {
                    what: format!("cannot read the {what} {}", path.display()),
                    source,
                };
            }
            Problem::Owner { uid } => format!(
                "owned by uid {uid}, neither root nor you: `chown {} FILE`",
                nix::unistd::geteuid()
            ),
            Problem::Accessible { mode } | Problem::Writable { mode } => {
                format!("mode {mode:04o}: others may read or change it; `chmod {fix} FILE`")
            }
            _ => "not a regular file".into(),
        };
        Error::Usage(format!("{what} {}: {why}", path.display()))
    })?;
    Ok(file)
}

/// Reads one line of at most `max` bytes, without its line ending. An empty input is an empty
/// line; anything longer than `max` is refused rather than cut.
pub fn read_line(reader: &mut impl BufRead, max: usize) -> Result<Zeroizing<String>, String> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(max.min(1024) + 2));
    reader
        .take(max as u64 + 2)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.len() > max {
        return Err(format!("longer than {max} bytes"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "not valid UTF-8".to_string())?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdin().is_terminal()
}

/// Shows `prompt` on stderr and reads a line from the terminal on stdin with echo off.
fn from_terminal(prompt: &str, max: usize) -> Result<Zeroizing<String>, Error> {
    let io_error = |source| Error::Io {
        what: "cannot read from the terminal".into(),
        source,
    };
    let mut stderr = io::stderr().lock();
    stderr
        .write_all(prompt.as_bytes())
        .and_then(|()| stderr.flush())
        .map_err(io_error)?;
    let line = {
        let _quiet = NoEcho::on_stdin().map_err(io_error)?;
        read_line(&mut io::stdin().lock(), max)
    };
    // The newline the person typed was not echoed either.
    let _ = stderr.write_all(b"\n");
    line.map_err(Error::Usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &[u8], max: usize) -> Result<String, String> {
        read_line(&mut io::Cursor::new(input), max).map(|s| s.to_string())
    }

    #[test]
    fn lines_lose_their_ending_and_nothing_else() {
        assert_eq!(line(b"correct horse\n", 100).unwrap(), "correct horse");
        assert_eq!(
            line(b"  spaced  \r\nsecond line\n", 100).unwrap(),
            "  spaced  "
        );
        assert_eq!(line(b"no newline", 100).unwrap(), "no newline");
        assert_eq!(line(b"", 100).unwrap(), "");
        assert_eq!(line(b"\n", 100).unwrap(), "");
    }

    #[test]
    fn overlong_and_binary_lines_are_refused() {
        assert_eq!(line(b"12345\n", 5).unwrap(), "12345");
        assert_eq!(line(b"12345\r\n", 5).unwrap(), "12345");
        assert_eq!(line(b"123456\n", 5).unwrap_err(), "longer than 5 bytes");
        assert_eq!(
            line(&[b'x'; 5000], 1024).unwrap_err(),
            "longer than 1024 bytes"
        );
        assert_eq!(line(b"\xff\xfe\n", 5).unwrap_err(), "not valid UTF-8");
    }

    #[test]
    fn passphrase_files_give_their_first_line() {
        let dir = std::env::temp_dir().join(format!("kronctl-pass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("pass");
        std::fs::write(&file, "pass phrase\nignored\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            passphrase(Some(&file), true)
                .unwrap_err()
                .to_string()
                .contains("chmod 600"),
            "others may read it"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(*passphrase(Some(&file), true).unwrap(), "pass phrase");
        std::fs::write(&file, "\n").unwrap();
        assert!(
            passphrase(Some(&file), false)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = passphrase(Some(&dir.join("missing")), false).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read the passphrase file"),
            "{missing}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
