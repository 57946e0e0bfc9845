//! `kronctl fleet`: thin clients of otpd's root-only fleet methods. otpd does the database
//! work; kronctl, running as root outside otpd's sandbox (which reads neither root's home nor
//! writes /etc), reads the owner's files and sends what they hold, writes a new host's
//! password file, makes the call and prints the answer.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | one function per subcommand |
//! | `push.rs` | `push`, a page of local users at a time, its output written as they come |
//! | `render.rs` | text and JSON output of the others |
//!
//! Its command line is `cli/fleet.rs`, with the rest of kronctl's.

mod push;
mod render;

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::cli::{Cli, FleetArgs, FleetCommand, OwnerArgs};
use crate::client::Otpd;
use crate::error::Error;
use crate::output::print;
use crate::passphrase::{password_line, trusted_file};
use crate::secret_file::SecretFile;
use kron_common::trust::{FinalLink, Kind};

pub async fn run(cli: &Cli, args: &FleetArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let proxy = otpd.proxy();
    match &args.command {
        FleetCommand::Init { owner, key_file } => {
            let owner = Owner::read(owner)?;
            let said = proxy
                .fleet_init(
                    &owner.url,
                    &owner.ca_file,
                    &owner.ca_pem,
                    &owner.password,
                    key_file.as_deref().unwrap_or(""),
                )
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::lines(&said, cli.json))
        }
        FleetCommand::AddHost {
            name,
            owner,
            password_file,
        } => {
            let owner = Owner::read(owner)?;
            let path = path_arg(Some(password_file))?;
            // Written aside first: the role's new password never exists without its file.
            let staged = Staged::write(Path::new(&path))?;
            let section = proxy
                .fleet_add_host(
                    name,
                    &owner.url,
                    &owner.ca_file,
                    &owner.ca_pem,
                    &owner.password,
                    &staged.password,
                    &path,
                )
                .await;
            let section = match section {
                Ok(section) => section,
                Err(e) => {
                    let failed = otpd.fail(e);
                    // An internal failure or a lost answer may have come after the commit: the
                    // password may be in effect, so it is kept for the admin. A refusal (bad
                    // argument, conflict, access) changed nothing.
                    if matches!(
                        failed,
                        Error::Failed(_) | Error::Unreachable { .. } | Error::Protocol(_)
                    ) {
                        eprintln!(
                            "kronctl: the role may have the password kept in {}: move it into \
                             place, or run add-host again",
                            staged.path.display()
                        );
                        staged.keep();
                    }
                    return Err(failed);
                }
            };
            staged.put_in_place(Path::new(&path))?;
            print(&render::add_host(name, &section, &path, cli.json))
        }
        FleetCommand::Status => {
            let status = proxy.fleet_status().await.map_err(|e| otpd.fail(e))?;
            print(&render::status(&status, cli.json))
        }
        FleetCommand::OfflineAdd { user } => {
            let added = proxy
                .fleet_offline_add(user)
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::offline_add(user, added, cli.json))
        }
        FleetCommand::Push => push::run(cli, &otpd).await,
        FleetCommand::Log { user, owner, limit } => {
            let owner = Owner::read(owner)?;
            let rows = proxy
                .fleet_log(
                    &owner.url,
                    &owner.ca_file,
                    &owner.ca_pem,
                    &owner.password,
                    user.as_deref().unwrap_or(""),
                    *limit,
                )
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::log(&rows, cli.json))
        }
    }
}

/// A path as otpd needs it: absolute (otpd runs elsewhere), "" when not given.
fn path_arg(path: Option<&Path>) -> Result<String, Error> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    let absolute: PathBuf = std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("cannot resolve {}", path.display()),
        source,
    })?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|_| Error::Usage("file paths must be UTF-8".into()))
}

/// Largest CA file read: a chain of a few certificates, never a document.
const MAX_CA_BYTES: u64 = 256 * 1024;
/// Longest password line read from the owner's file.
const MAX_PASSWORD: usize = 1024;

/// The owner's arguments as otpd takes them: the files read here.
struct Owner {
    url: String,
    /// Absolute, for the host's section; "" for this host's own.
    ca_file: String,
    ca_pem: String,
    password: Zeroizing<String>,
}

impl Owner {
    fn read(args: &OwnerArgs) -> Result<Owner, Error> {
        let ca_pem = match &args.ca_file {
            Some(path) => read_ca(path)?,
            None => String::new(),
        };
        let password = match &args.owner_password_file {
            Some(path) => password_line(path, "password file", MAX_PASSWORD)?,
            None => Zeroizing::new(String::new()),
        };
        Ok(Owner {
            url: args.url.clone(),
            ca_file: path_arg(args.ca_file.as_deref())?,
            ca_pem,
            password,
        })
    }
}

/// A CA file's certificates: a file root (or the caller) owns and nobody else may change, as
/// otpd requires of its own `ca_file`.
fn read_ca(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let refused = |why: String| Error::Usage(format!("CA file {}: {why}", path.display()));
    let file = trusted_file(path, "CA file", Kind::File, FinalLink::Follow)?;
    let mut text = String::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| refused("not PEM text".into()))?;
    if text.len() as u64 > MAX_CA_BYTES {
        return Err(refused(format!("larger than {MAX_CA_BYTES} bytes")));
    }
    Ok(text)
}

/// Random bytes in a new host password: 192 bits.
const PASSWORD_BYTES: usize = 24;

/// The password as the role and its file hold it: lowercase hex, ASCII that any PostgreSQL
/// client and any config file take as it is. `hex` sizes its string exactly, so no
/// reallocation leaves a copy behind for [`Zeroizing`] to miss.
fn password_text(bytes: &[u8; PASSWORD_BYTES]) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(bytes))
}

/// A new host password, written to `FILE.new` (0600) before the role gets it.
struct Staged {
    path: PathBuf,
    password: Zeroizing<String>,
    keep: bool,
}

impl Staged {
    fn write(final_path: &Path) -> Result<Staged, Error> {
        use std::io::Read;
        // Where otpd will read it at every connect: refused there later, the role would have a
        // password its host cannot use, so refused here first, with nothing changed.
        kron_common::trust::check(
            final_path,
            kron_common::trust::Kind::Secret,
            kron_common::trust::Owners::root(),
            true,
        )
        .map_err(|untrusted| Error::Usage(format!("password file: {untrusted}")))?;
        let mut bytes = Zeroizing::new([0u8; PASSWORD_BYTES]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(bytes.as_mut()))
            .map_err(|source| Error::Io {
                what: "no randomness (/dev/urandom)".into(),
                source,
            })?;
        let password = password_text(&bytes);
        let mut staged = final_path.as_os_str().to_owned();
        staged.push(".new");
        let path = PathBuf::from(staged);
        // A stale one from an earlier run that failed: never a password in effect (that run
        // said so and kept it only when the role might have it; it is replaced now anyway).
        let _ = std::fs::remove_file(&path);
        let line = Zeroizing::new(format!("{}\n", password.as_str()));
        SecretFile::create(&path)?.finish(line.as_bytes())?;
        Ok(Staged {
            path,
            password,
            keep: false,
        })
    }

    fn keep(mut self) {
        self.keep = true;
    }

    fn put_in_place(mut self, final_path: &Path) -> Result<(), Error> {
        // The role has this password now: the file stays, whatever happens next.
        self.keep = true;
        std::fs::rename(&self.path, final_path).map_err(|source| Error::Io {
            what: format!(
                "the role has its new password, kept in {}; cannot move it to {}",
                self.path.display(),
                final_path.display()
            ),
            source,
        })?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_password_is_lowercase_hex_of_every_byte() {
        let mut bytes = [0u8; PASSWORD_BYTES];
        bytes[..4].copy_from_slice(&[0x00, 0x0f, 0xa5, 0xff]);
        bytes[PASSWORD_BYTES - 1] = 0x10;
        let password = password_text(&bytes);
        assert_eq!(password.len(), 2 * PASSWORD_BYTES);
        assert!(
            password.starts_with("000fa5ff0000"),
            "{}",
            password.as_str()
        );
        assert!(password.ends_with("0010"), "{}", password.as_str());
        assert!(
            password
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
