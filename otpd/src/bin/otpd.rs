//! otpd, the kron daemon. All logic lives in the library; see `otpd::daemon`.

fn main() {
    std::process::exit(otpd::daemon::main());
}
