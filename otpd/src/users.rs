//! What the system knows about a user, through NSS (local files, LDAP, SSSD alike).

use crate::error::{Error, Result};
use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use std::ffi::CString;

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

fn nss_error(what: &str, e: nix::Error) -> Error {
    Error::System(format!("NSS lookup of {what} failed: {e}"))
}

impl Directory for Nss {
    fn by_name(&self, name: &str) -> Result<Option<Account>> {
        let Some(user) = User::from_name(name).map_err(|e| nss_error("a user", e))? else {
            return Ok(None);
        };
        let cname = CString::new(name)
            .map_err(|_| Error::InvalidArgument("user name contains NUL".into()))?;
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

#[cfg(test)]
pub mod fake {
    //! An in-memory directory for unit tests.
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
