//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay on stable Rust
//! (`fuzz/targets`): what otpd reads but did not write itself in this run, fed arbitrary
//! bytes. Each function only has to return; a panic is the bug.

#![forbid(unsafe_code)]

use crate::store::encoding::{decode, encode};

/// An export file as otpd reads it (`Import`, `ImportChunk`): with a first byte of 0 the rest
/// is the decrypted JSON, parsed and checked a user at a time; otherwise the whole input is an
/// age file, opened with a passphrase and a scrypt work factor capped at 2 (so an input that
/// happens to be a well-formed age header stays cheap).
pub fn backup(data: &[u8]) {
    use crate::engine::backup_io;
    let mut users = 0u64;
    let mut count = |_user| {
        users += 1;
        Ok(())
    };
    let outcome = match data.split_first() {
        Some((0, plain)) => backup_io::read_plain(plain, &mut count),
        _ => backup_io::read_with_work_limit(data, "a pass phrase", 2, &mut count),
    };
    if let Ok(info) = outcome {
        assert_eq!(info.users, users, "every user counted was handed over");
    }
}

/// A stored user record (the store's bytes, as an older version or damage left them): what
/// decodes must encode and decode to the same record.
pub fn record(data: &[u8]) {
    if let Ok(record) = decode("fuzz", data) {
        let again = encode(&record).expect("a decoded record encodes");
        assert_eq!(decode("fuzz", &again).expect("and decodes"), record);
    }
}
