//! The connection to otpd: one bus address, given explicitly, and one proxy.
//!
//! Never `Connection::system()`: that reads DBUS_SYSTEM_BUS_ADDRESS behind our back, and the
//! design rule is that the address in use is the one on the command line (or KRON_BUS, which
//! clap resolved into it). Every failure comes back as [`Error`] already classified, so the
//! commands never look at zbus errors.

use std::time::Duration;

use kron_proto::{Enrollment, OtpdProxy, UserStatus};
use zbus::proxy::CacheProperties;

use crate::error::Error;

/// Longest wait for one answer. A bus daemon gives up after 25 s by default and reports
/// NoReply itself; this bounds the wait on a peer-to-peer address too.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Otpd {
    proxy: OtpdProxy<'static>,
    address: String,
}

impl Otpd {
    pub async fn connect(address: &str) -> Result<Self, Error> {
        let connection = zbus::connection::Builder::address(address)
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|error| Error::from_transport(error, address))?;
        // kronctl never reads the Version property: no cache, so no GetAll and no match rule.
        let proxy = OtpdProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|error| Error::from_transport(error, address))?;
        Ok(Otpd {
            proxy,
            address: address.to_owned(),
        })
    }

    fn fail(&self, error: zbus::Error) -> Error {
        Error::from_call(error, &self.address)
    }

    /// `user` empty means the caller.
    pub async fn enroll(&self, user: &str) -> Result<Enrollment, Error> {
        self.proxy.enroll(user).await.map_err(|e| self.fail(e))
    }

    /// `user` empty means the caller.
    pub async fn confirm(&self, user: &str, code: &str) -> Result<(), Error> {
        self.proxy
            .confirm(user, code)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `user` empty means the caller.
    pub async fn status(&self, user: &str) -> Result<UserStatus, Error> {
        self.proxy.status(user).await.map_err(|e| self.fail(e))
    }

    pub async fn list(&self) -> Result<Vec<UserStatus>, Error> {
        self.proxy.list().await.map_err(|e| self.fail(e))
    }

    /// True if there was anything to delete.
    pub async fn reset(&self, user: &str) -> Result<bool, Error> {
        self.proxy.reset(user).await.map_err(|e| self.fail(e))
    }

    /// True if the user was throttled.
    pub async fn unlock(&self, user: &str) -> Result<bool, Error> {
        self.proxy.unlock(user).await.map_err(|e| self.fail(e))
    }
}
