//! Why the store failed, with the error of the layer below kept as the source: sled's own
//! error, the `io::Error` of a file otpd opens or syncs itself, or a record that does not
//! decode. [`StoreError::is_out_of_space`] tells a full file system (which only freeing space
//! mends) from everything else.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug)]
pub enum StoreError {
    /// sled failed (an I/O error it met, a corrupt log, a bug of its own).
    Sled(sled::Error),
    /// A file or directory of the store could not be created, opened or synced.
    Io {
        /// What otpd was doing ("fdatasync of the store log").
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A stored record does not decode, or a record could not be encoded.
    Record {
        user: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record was stored in a format this otpd does not know.
    UnknownFormat { user: String },
    /// The store failed earlier and is not usable yet (it is reopened as soon as it can be).
    /// The failure was logged once when it happened; requests refused meanwhile are not
    /// logged again, or a full disk would write one line per login.
    Unavailable(Arc<StoreError>),
    /// The thread that makes writes durable panicked during a flush.
    FlushPanicked,
    /// The store is closed and no failure is on record (it never is without one).
    Closed,
    /// The fleet's database could not be reached, refused a statement or answered something
    /// unexpected (`store/postgres/`); the text names which, never a code or a seed.
    Database(String),
    /// A fleet host's offline packs or journal (`store/offline/`) could not be encoded or read.
    Offline(String),
}

impl StoreError {
    /// A full file system or an exhausted quota, here or in the failure this one stands for.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::Sled(sled::Error::Io(e)) | StoreError::Io { source: e, .. } => {
                io_out_of_space(e)
            }
            StoreError::Unavailable(cause) => cause.is_out_of_space(),
            _ => false,
        }
    }

    /// A failure of the store's files or of sled (as opposed to one record that does not
    /// decode): the open store can no longer be trusted and must be reopened.
    pub fn breaks_the_store(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(_) | StoreError::Io { .. } | StoreError::FlushPanicked
        )
    }

    /// Whether this failure was already logged (see [`StoreError::Unavailable`]).
    pub fn is_reported(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// ENOSPC or EDQUOT, whether the error still carries its errno or (as sled's copies do) only
/// its kind.
fn io_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sled(sled::Error::Io(e)) if io_out_of_space(e) => {
                write!(f, "sled: no space left on device (or quota exceeded)")
            }
            StoreError::Sled(e) => write!(f, "sled: {e}"),
            StoreError::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
            StoreError::Record { user, source } => {
                write!(f, "the record of {user} is unreadable: {source}")
            }
            StoreError::UnknownFormat { user } => {
                write!(f, "the record of {user} is unreadable: unknown format")
            }
            StoreError::Unavailable(cause) => write!(f, "unavailable since: {cause}"),
            StoreError::FlushPanicked => write!(f, "the store flush panicked"),
            StoreError::Closed => write!(f, "the store is closed"),
            StoreError::Database(what) | StoreError::Offline(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sled(e) => Some(e),
            StoreError::Io { source, .. } => Some(source),
            StoreError::Record { source, .. } => Some(source.as_ref()),
            StoreError::Unavailable(cause) => Some(cause.as_ref()),
            StoreError::UnknownFormat { .. }
            | StoreError::FlushPanicked
            | StoreError::Closed
            | StoreError::Database(_)
            | StoreError::Offline(_) => None,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_recognised_through_sled_and_behind_unavailable() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        // sled keeps copies of its errors that lose the errno but keep the kind.
        let copied = io::Error::new(full.kind(), format!("{full:?}"));
        assert!(StoreError::Sled(sled::Error::Io(copied)).is_out_of_space());
        let quota = StoreError::Io {
            what: "fdatasync of",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(libc::EDQUOT),
        };
        assert!(quota.is_out_of_space());
        assert!(StoreError::Unavailable(Arc::new(quota)).is_out_of_space());
        let eio = StoreError::Sled(sled::Error::Io(io::Error::from_raw_os_error(libc::EIO)));
        assert!(!eio.is_out_of_space());
        assert!(eio.breaks_the_store());
        let record = StoreError::UnknownFormat { user: "a".into() };
        assert!(!record.breaks_the_store() && !record.is_reported());
        let source = std::error::Error::source(&eio).unwrap();
        assert!(
            source.downcast_ref::<sled::Error>().is_some(),
            "typed source"
        );
    }
}
