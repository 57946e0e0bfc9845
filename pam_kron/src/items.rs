//! What PAM knows about this login: PAM_USER, PAM_SERVICE, PAM_RHOST and PAM_TTY.

use std::ffi::CStr;

use kron_proto::{MAX_FIELD_LEN, MAX_USER_LEN};
use pam::items::{RHost, Service, Tty};
use pam::module::PamHandle;

use crate::error::Error;

/// The arguments of `BeginLogin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub user: String,
    pub service: String,
    /// Empty when the application set no PAM_RHOST (a local login).
    pub rhost: String,
    /// Empty when the application set no PAM_TTY.
    pub tty: String,
}

/// Reads the four items. `pam_get_user` may ask the person for a user name through the
/// conversation if the application has not set one, as every auth module may.
pub(crate) fn gather(pamh: &mut PamHandle) -> Result<Login, Error> {
    let user = pamh.get_user(None).map_err(|code| Error::Item {
        item: "user",
        reason: format!("pam_get_user failed: {code:?}"),
    })?;
    let pamh: &PamHandle = pamh;
    let service = optional(
        pamh.get_item::<Service>().map(|i| i.map(|s| s.0)),
        "service",
    )?;
    let rhost = optional(pamh.get_item::<RHost>().map(|i| i.map(|s| s.0)), "rhost")?;
    let tty = optional(pamh.get_item::<Tty>().map(|i| i.map(|s| s.0)), "tty")?;
    check(Login {
        user,
        service,
        rhost,
        tty,
    })
}

/// An item that may be unset; unset reads as "".
fn optional(
    item: Result<Option<&CStr>, pam::constants::PamResultCode>,
    name: &'static str,
) -> Result<String, Error> {
    match item {
        Ok(None) => Ok(String::new()),
        Ok(Some(value)) => value.to_str().map(str::to_owned).map_err(|_| Error::Item {
            item: name,
            reason: "not UTF-8".into(),
        }),
        Err(code) => Err(Error::Item {
            item: name,
            reason: format!("pam_get_item failed: {code:?}"),
        }),
    }
}

/// Applies the contract's bounds here rather than sending what otpd must refuse. Too long is
/// refused, never truncated: a truncated service or user name could match another rule.
pub(crate) fn check(login: Login) -> Result<Login, Error> {
    if login.user.is_empty() {
        return Err(Error::Item {
            item: "user",
            reason: "empty".into(),
        });
    }
    for (item, value, max) in [
        ("user", &login.user, MAX_USER_LEN),
        ("service", &login.service, MAX_FIELD_LEN),
        ("rhost", &login.rhost, MAX_FIELD_LEN),
        ("tty", &login.tty, MAX_FIELD_LEN),
    ] {
        if value.len() > max {
            return Err(Error::Item {
                item,
                reason: format!("longer than {max} bytes"),
            });
        }
    }
    Ok(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, rhost: &str) -> Login {
        Login {
            user: user.into(),
            service: "sshd".into(),
            rhost: rhost.into(),
            tty: "ssh".into(),
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(check(login("alice", "")).is_ok());
        assert!(matches!(
            check(login("", "")),
            Err(Error::Item { item: "user", .. })
        ));
        let long_user = "a".repeat(MAX_USER_LEN + 1);
        assert!(matches!(
            check(login(&long_user, "")),
            Err(Error::Item { item: "user", .. })
        ));
        let long_host = "h".repeat(MAX_FIELD_LEN + 1);
        assert!(matches!(
            check(login("alice", &long_host)),
            Err(Error::Item { item: "rhost", .. })
        ));
    }

    #[test]
    fn unset_items_read_as_empty_and_bad_ones_are_refused() {
        assert_eq!(optional(Ok(None), "tty").unwrap(), "");
        assert_eq!(optional(Ok(Some(c"pts/1")), "tty").unwrap(), "pts/1");
        let bad = std::ffi::CString::new(b"\xff\xfe".to_vec()).unwrap();
        assert!(matches!(
            optional(Ok(Some(&bad)), "rhost"),
            Err(Error::Item { item: "rhost", .. })
        ));
    }
}
