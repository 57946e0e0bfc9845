//! What the system knows about a user, through NSS (local files, LDAP, SSSD alike).

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use std::ffi::CString;

/// NSS could not answer (directory server down, broken nsswitch.conf): nothing can be decided.
#[derive(Debug)]
pub enum DirectoryError {
    /// The lookup of `what` ("a user", "groups", ...) failed.
    Lookup {
        what: &'static str,
        source: nix::Error,
    },
    /// A name with a NUL byte cannot be passed to NSS.
    NulInName,
}

impl std::fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectoryError::Lookup { what, source } => {
                write!(f, "NSS lookup of {what} failed: {source}")
            }
            DirectoryError::NulInName => f.write_str("user name contains NUL"),
        }
    }
}

impl std::error::Error for DirectoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DirectoryError::Lookup { source, .. } => Some(source),
            DirectoryError::NulInName => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, DirectoryError>;

/// Facts about an account that policy and authorization need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// Where otpd learns about accounts; a trait so unit tests need no real users.
pub trait Directory: Send + Sync {
    /// The account called `name`, or `None` if NSS does not know it.
    fn by_name(&self, name: &str) -> Result<Option<Account>>;
    /// The name of the account with `uid`, if any.
    fn name_of(&self, uid: u32) -> Result<Option<String>>;
    /// The gid of group `name`, if it exists.
    fn group_gid(&self, name: &str) -> Result<Option<u32>>;
}

/// The real NSS directory.
pub struct Nss;

fn nss_error(what: &'static str, source: nix::Error) -> DirectoryError {
    DirectoryError::Lookup { what, source }
}

impl Directory for Nss {
    fn by_name(&self, name: &str) -> Result<Option<Account>> {
        let Some(user) = User::from_name(name).map_err(|e| nss_error("a user", e))? else {
            return Ok(None);
        };
        let cname = CString::new(name).map_err(|_| DirectoryError::NulInName)?;
        let gids = getgrouplist(&cname, user.gid).map_err(|e| nss_error("groups", e))?;
        Ok(Some(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gids: gids.into_iter().map(Gid::as_raw).collect(),
        }))
    }

    fn name_of(&self, uid: u32) -> Result<Option<String>> {
        Ok(User::from_uid(Uid::from_raw(uid))
            .map_err(|e| nss_error("a uid", e))?
            .map(|u| u.name))
    }

    fn group_gid(&self, name: &str) -> Result<Option<u32>> {
        Ok(Group::from_name(name)
            .map_err(|e| nss_error("a group", e))?
            .map(|g| g.gid.as_raw()))
    }
}

#[cfg(any(test, feature = "fake"))]
pub mod fake {
    //! An in-memory directory for unit tests (feature `fake`).
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct FakeDirectory {
        pub users: HashMap<String, Account>,
        pub groups: HashMap<String, u32>,
    }

    impl FakeDirectory {
        pub fn with_user(mut self, name: &str, uid: u32, groups: &[&str]) -> Self {
            let gids = groups
                .iter()
                .map(|g| {
                    let next = 1000 + self.groups.len() as u32;
                    *self.groups.entry(g.to_string()).or_insert(next)
                })
                .collect();
            self.users.insert(
                name.into(),
                Account {
                    name: name.into(),
                    uid,
                    gids,
                },
            );
            self
        }
    }

    impl Directory for FakeDirectory {
        fn by_name(&self, name: &str) -> Result<Option<Account>> {
            Ok(self.users.get(name).cloned())
        }
        fn name_of(&self, uid: u32) -> Result<Option<String>> {
            Ok(self
                .users
                .values()
                .find(|a| a.uid == uid)
                .map(|a| a.name.clone()))
        }
        fn group_gid(&self, name: &str) -> Result<Option<u32>> {
            Ok(self.groups.get(name).copied())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_through_nss() {
        let root = Nss.by_name("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert!(root.gids.contains(&0));
        assert_eq!(Nss.name_of(0).unwrap().as_deref(), Some("root"));
        assert_eq!(Nss.group_gid("root").unwrap(), Some(0));
        assert_eq!(Nss.by_name("no-such-user-kron-test").unwrap(), None);
    }
}
