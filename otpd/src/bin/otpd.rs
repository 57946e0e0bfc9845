//! otpd, the kron daemon. All logic lives in the library; see `otpd::dbus::daemon`.

fn main() {
    std::process::exit(otpd::dbus::daemon::main());
}
