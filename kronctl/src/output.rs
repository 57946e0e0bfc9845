//! What kronctl writes: its output to stdout in one piece, and a QR code to a private PNG file.

#![forbid(unsafe_code)]

use std::io::Write;

use zeroize::Zeroize;

use crate::error::Error;
use crate::secret_file::SecretFile;

/// Pixels per QR module in the PNG: about 300 px wide for a typical otpauth URI.
const PNG_SCALE: u32 = 6;

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

/// Renders `uri` (it holds a secret) as a QR code into `file`, and wipes the image.
pub fn qr_png(file: SecretFile, uri: &str) -> Result<(), Error> {
    let mut image = kron_common::qr::png(uri, PNG_SCALE).map_err(|reason| Error::Io {
        what: "cannot render the QR code as PNG".into(),
        source: std::io::Error::other(reason),
    })?;
    let written = file.finish(&image);
    image.zeroize();
    written
}
