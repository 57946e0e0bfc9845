//! Writing to stdout: a command's output goes out whole, through [`print`], except where it
//! grows with the store (`list`, `import`): those write it as it comes.
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
        .map_err(|source| Error::Io {
            what: "cannot write to stdout".into(),
            source,
        })
}

/// [`print`] for a text that holds a secret (an enrollment, recovery codes, a token's URI): the
/// text is wiped once written, whether the write worked or not.
pub fn print_secret(mut text: String) -> Result<(), Error> {
    let printed = print(&text);
    text.zeroize();
    printed
}
