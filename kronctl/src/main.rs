//! `kronctl`, the command-line client of otpd; everything lives in the library.

fn main() -> std::process::ExitCode {
    kronctl::main()
}
