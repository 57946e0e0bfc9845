//! `dbus-policy`: the D-Bus policy file that lets otpd own its name is installed.
//! `otpd-reachable`: otpd answers on the bus (its `Version` property).
#![forbid(unsafe_code)]

use std::time::Duration;

use kron_proto::{BUS_NAME, OtpdProxy, UserStatus};
use zbus::proxy::CacheProperties;

use super::files::{Root, read_bounded};
use super::report::{Finding, Findings};
use crate::error::Error;

/// Where dbus-daemon reads system bus policy files from (vendor, then local admin).
pub const POLICY_DIRS: [&str; 2] = ["/usr/share/dbus-1/system.d", "/etc/dbus-1/system.d"];
/// The file name the package installs.
pub const POLICY_FILE: &str = "io.kron.Otpd.conf";

/// A doctor waits less than the other commands: a healthy otpd answers in milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to otpd that answered, with the version it reported.
pub struct Otpd {
    proxy: OtpdProxy<'static>,
    address: String,
    pub version: String,
}

impl std::fmt::Debug for Otpd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otpd")
            .field("address", &self.address)
            .field("version", &self.version)
            .finish()
    }
}

impl Otpd {
    /// `Status(user)`; the error is kronctl's one-line text.
    pub async fn status(&self, user: &str) -> Result<UserStatus, String> {
        self.proxy
            .status(user)
            .await
            .map_err(|e| describe(&Error::from_call(e, &self.address)))
    }
}

pub fn check_policy_file(root: &Root, out: &mut Findings) {
    if !out.wants("dbus-policy") {
        return;
    }
    let found = POLICY_DIRS
        .iter()
        .map(|dir| format!("{dir}/{POLICY_FILE}"))
        .find(|path| root.exists(path));
    match found {
        None => out.push(Finding::error(
            "dbus-policy",
            format!(
                "no {POLICY_FILE} in {} or {}: the system bus does not let otpd own {BUS_NAME}, so otpd cannot start and every login that reaches pam_kron fails",
                POLICY_DIRS[0], POLICY_DIRS[1]
            ),
            format!(
                "install packaging/dbus/{POLICY_FILE} to {}/ and run `systemctl reload dbus`",
                POLICY_DIRS[0]
            ),
        )),
        Some(path) => match root.path(&path).and_then(|path| read_bounded(&path)) {
            Ok(text) if mentions_own(&text) => out.push(Finding::ok(
                "dbus-policy",
                format!("{path} lets root own {BUS_NAME}"),
            )),
            Ok(_) => out.push(Finding::error(
                "dbus-policy",
                format!("{path} does not allow anyone to own {BUS_NAME}"),
                format!("replace it with packaging/dbus/{POLICY_FILE} and run `systemctl reload dbus`"),
            )),
            Err(error) => out.push(Finding::warning(
                "dbus-policy",
                format!("cannot read {path}: {error}"),
                "run kronctl doctor as root",
            )),
        },
    }
}

/// True if the policy text has an `allow own="io.kron.Otpd"` rule.
fn mentions_own(text: &str) -> bool {
    let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    compact.contains(&format!("<allow own=\"{BUS_NAME}\""))
        || compact.contains(&format!("<allow own='{BUS_NAME}'"))
}

/// Connects to `address` and reads otpd's `Version`. The error is a one-line reason.
pub async fn reach(address: &str) -> Result<Otpd, String> {
    let transport = |error| describe(&Error::from_transport(error, address));
    let connection = zbus::connection::Builder::address(address)
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(transport)?;
    let proxy = OtpdProxy::builder(&connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(transport)?;
    let version = proxy
        .version()
        .await
        .map_err(|error| describe(&Error::from_call(error, address)))?;
    Ok(Otpd {
        proxy,
        address: address.to_owned(),
        version,
    })
}

/// kronctl's one-line text for `error`, without the advice the other commands append.
pub fn describe(error: &Error) -> String {
    match error {
        Error::Unreachable { address, reason } => {
            format!("otpd is not reachable at {address}: {reason}")
        }
        other => other.to_string(),
    }
}

pub fn report_reachable(otpd: &Result<Otpd, String>, out: &mut Findings) {
    match otpd {
        Ok(otpd) if otpd.version == env!("CARGO_PKG_VERSION") => out.push(Finding::ok(
            "otpd-reachable",
            format!("otpd {} answers at {}", otpd.version, otpd.address),
        )),
        Ok(otpd) => out.push(Finding::warning(
            "otpd-reachable",
            format!(
                "otpd {} answers at {}, but this kronctl is {}",
                otpd.version,
                otpd.address,
                env!("CARGO_PKG_VERSION")
            ),
            "install otpd and kronctl from the same kron release, then `systemctl restart otpd`",
        )),
        Err(reason) => out.push(Finding::error(
            "otpd-reachable",
            format!("{reason}; logins that reach pam_kron fail until otpd answers"),
            "start otpd (`systemctl enable --now otpd`) and check `journalctl -u otpd`; for another bus use --bus",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_is_found_in_either_directory_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mut out = Findings::new(&[]);
        check_policy_file(&root, &mut out);

        let shipped = include_str!("../../../packaging/dbus/io.kron.Otpd.conf");
        std::fs::create_dir_all(dir.path().join("etc/dbus-1/system.d")).unwrap();
        let installed = dir.path().join("etc/dbus-1/system.d").join(POLICY_FILE);
        std::fs::write(&installed, shipped).unwrap();
        check_policy_file(&root, &mut out);

        std::fs::write(&installed, "<busconfig/>").unwrap();
        check_policy_file(&root, &mut out);

        let severities: Vec<_> = out.into_vec().iter().map(|f| f.severity).collect();
        use crate::doctor::report::Severity::*;
        assert_eq!(severities, [Error, Ok, Error]);
    }

    #[test]
    fn unreachable_bus_is_an_error_with_the_reason() {
        let otpd = zbus::block_on(reach("unix:path=/nonexistent/kron-doctor-bus"));
        let mut out = Findings::new(&[]);
        report_reachable(&otpd, &mut out);
        let finding = &out.into_vec()[0];
        assert_eq!(finding.severity, crate::doctor::report::Severity::Error);
        assert!(
            finding
                .message
                .starts_with("otpd is not reachable at unix:path=/nonexistent"),
            "{finding:?}"
        );
    }
}
