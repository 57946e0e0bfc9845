//! The enrolled state of each module, written the way each module documents it:
//! google-authenticator secret files (one per user, `secret=DIR/${USER}`), pam_oath's users
//! file, and the NSS passwd database (libnss-db's `makedb` input) every account needs.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::population::{self, GID, PERIOD};

/// google-authenticator files for users `from..to` in `dir`: TOTP, DISALLOW_REUSE and
/// RATE_LIMIT 3 30, as `google-authenticator -t -d -r 3 -R 30 -e N` writes them (with `scratch`
/// eight-digit scratch codes), mode 0400.
pub fn ga(dir: &Path, from: u64, to: u64, scratch: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for index in from..to {
        let path = dir.join(population::name(index));
        let mut text = format!(
            "{}\n\" RATE_LIMIT 3 30\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n",
            population::base32(&population::secret(index))
        );
        for code in 0..scratch {
            text.push_str(&format!("{}\n", scratch_code(index, code)));
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Scratch code number `code` of user `index`: eight digits, as google-authenticator makes.
pub fn scratch_code(index: u64, code: u64) -> String {
    let value = index
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(code.wrapping_mul(0x2545_f491_4f6c_dd1d));
    format!("{:08}", 10_000_000 + value % 90_000_000)
}

/// pam_oath's users file for users `0..users`: `HOTP/T30/6 user - hexkey` (no static password).
pub fn oath(file: &Path, users: u64) -> Result<(), String> {
    let tmp = file.with_extension("tmp");
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut out = BufWriter::new(out);
    for index in 0..users {
        writeln!(
            out,
            "HOTP/T{PERIOD}/6\t{}\t-\t{}",
            population::name(index),
            population::hex(&population::secret(index))
        )
        .map_err(|e| e.to_string())?;
    }
    out.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))
}

/// `makedb` input for libnss-db's passwd.db, in the format of Debian's /var/lib/misc/Makefile:
/// each entry under `.name`, `=uid` and `0index`.
pub fn nss(out: &Path, users: u64) -> Result<(), String> {
    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut out = BufWriter::new(file);
    for index in 0..users {
        let name = population::name(index);
        let uid = population::uid(index);
        let line = format!("{name}:x:{uid}:{GID}:kron bench:/nonexistent:/usr/sbin/nologin");
        writeln!(out, ".{name} {line}\n={uid} {line}\n0{index} {line}")
            .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}
