//! Reading configuration files with a bound on their size: a file larger than the bound is an
//! error, never silently cut short (a truncated config would be read without its last lines).

#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The text of `path`, an error if it holds more than `max` bytes, is not UTF-8, or is not a
/// regular file (a FIFO or a device would hold the reader: opened without waiting, refused).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let file = std::fs::File::options()
        .read(true)
        // A FIFO opens without waiting for a writer; a regular file reads the same.
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_waiting() {
        let dir = std::env::temp_dir().join(format!("kron-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("otpd.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let refused = read_bounded(&fifo, 100).unwrap_err();
        assert!(
            refused.to_string().contains("not a regular file"),
            "{refused}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_over_the_bound_is_an_error_not_a_prefix() {
        let dir = std::env::temp_dir().join(format!("kron-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), "12345");
        assert!(
            read_bounded(&path, 4)
                .unwrap_err()
                .to_string()
                .contains("larger than 4")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
