//! Writing to stdout: a command's output goes out whole, through [`print`], except where it
//! grows with the store (`list`, `import`, `fleet push`): those write it as it comes, and
//! report a failed write with [`stdout_error`].
#![forbid(unsafe_code)]

use std::io::Write;

use zeroize::Zeroize;

use crate::error::Error;

/// Writes the whole output at once; a closed pipe is an error, not a panic as in `print!`.
pub fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// A write to stdout that failed (a closed pipe, a full disk), as kronctl reports it.
pub fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        what: "cannot write to stdout".into(),
        source,
    }
}

/// [`print`] for a text that holds a secret (an enrollment, recovery codes, a token's URI): the
/// text is wiped once written, whether the write worked or not.
pub fn print_secret(mut text: String) -> Result<(), Error> {
    let printed = print(&text);
    text.zeroize();
    printed
}
