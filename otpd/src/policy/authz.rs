//! Who may do what. The caller is the uid the bus daemon reported for the sender, never a
//! claim of the caller itself.

use crate::error::{Error, Result};
use kron_common::config::Config;
use kron_common::users::{Account, Directory};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Kernel audit session of the calling process (`/proc/PID/sessionid`), if it has one.
    /// Set by pam_loginuid at login and not changeable by the user: what "the same login
    /// session" means for step-up grace.
    pub session: Option<u32>,
}

impl Caller {
    pub const fn new(uid: u32) -> Caller {
        Caller { uid, session: None }
    }

    pub fn is_root(self) -> bool {
        self.uid == 0
    }

    /// Root, or a member of `admin_group`.
    pub fn is_admin(self, config: &Config, directory: &dyn Directory) -> Result<bool> {
        if self.is_root() {
            return Ok(true);
        }
        let Some(admin_gid) = directory.group_gid(&config.admin_group)? else {
            return Ok(false);
        };
        let Some(name) = directory.name_of(self.uid)? else {
            return Ok(false);
        };
        Ok(directory
            .by_name(&name)?
            .is_some_and(|account| account.uid == self.uid && account.gids.contains(&admin_gid)))
    }

    pub fn require_admin(self, config: &Config, directory: &dyn Directory) -> Result<()> {
        if self.is_admin(config, directory)? {
            Ok(())
        } else {
            Err(Error::AccessDenied(format!(
                "only root or members of {} may do this",
                config.admin_group
            )))
        }
    }

    /// Login checks: root (sshd, sudo, su) for anyone; a user (a screen locker) only for
    /// themselves. Non-root callers cannot probe other names, known or not.
    pub fn may_log_in_as(self, account: Option<&Account>) -> Result<()> {
        if self.is_root() || account.is_some_and(|a| a.uid == self.uid) {
            Ok(())
        } else {
            Err(Error::AccessDenied(
                "a login check may only be made by root or for yourself".into(),
            ))
        }
    }

    /// Acting on `target`'s token (enroll, confirm, recovery codes, reset, unlock): users for
    /// themselves; admins for others, except that only root may act on root or on another
    /// admin, so a helpdesk account cannot quietly obtain a second factor for them.
    pub fn may_manage(
        self,
        target: &Account,
        config: &Config,
        directory: &dyn Directory,
    ) -> Result<()> {
        if self.is_root() || target.uid == self.uid {
            return Ok(());
        }
        if !self.is_admin(config, directory)? {
            return Err(Error::AccessDenied(
                "you may only manage your own token".into(),
            ));
        }
        let admin_gid = directory.group_gid(&config.admin_group)?;
        if target.uid == 0 || admin_gid.is_some_and(|gid| target.gids.contains(&gid)) {
            return Err(Error::AccessDenied(format!(
                "only root may manage the token of {} (root or an admin)",
                target.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kron_common::users::fake::FakeDirectory;

    #[test]
    fn roles() {
        let directory = FakeDirectory::default()
            .with_user("root", 0, &["root"])
            .with_user("alice", 1001, &["kron-admin"])
            .with_user("bob", 1002, &["users"]);
        let config = Config::default();
        let root = Caller::new(0);
        let alice = Caller::new(1001);
        let bob = Caller::new(1002);
        let stranger = Caller::new(4242);
        assert!(root.is_admin(&config, &directory).unwrap());
        assert!(alice.is_admin(&config, &directory).unwrap());
        assert!(!bob.is_admin(&config, &directory).unwrap());
        assert!(!stranger.is_admin(&config, &directory).unwrap());
        let bob_account = directory.by_name("bob").unwrap().unwrap();
        assert!(root.may_log_in_as(None).is_ok());
        assert!(bob.may_log_in_as(Some(&bob_account)).is_ok());
        assert!(
            alice.may_log_in_as(Some(&bob_account)).is_err(),
            "admins do not check others' logins"
        );
        assert!(bob.may_log_in_as(None).is_err());
        let root_account = directory.by_name("root").unwrap().unwrap();
        let alice_account = directory.by_name("alice").unwrap().unwrap();
        assert!(alice.may_manage(&bob_account, &config, &directory).is_ok());
        assert!(
            alice
                .may_manage(&root_account, &config, &directory)
                .is_err(),
            "admins not over root"
        );
        assert!(
            Caller::new(1004)
                .may_manage(&alice_account, &config, &directory)
                .is_err()
        );
        assert!(root.may_manage(&alice_account, &config, &directory).is_ok());
        assert!(bob.may_manage(&bob_account, &config, &directory).is_ok());
        assert!(bob.may_manage(&alice_account, &config, &directory).is_err());
    }
}
