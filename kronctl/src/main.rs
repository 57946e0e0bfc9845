//! `kronctl`, the command-line client of otpd; everything lives in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kronctl::main()
}
