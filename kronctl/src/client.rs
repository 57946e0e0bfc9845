//! The connection to otpd: one bus address, given explicitly, and one proxy.
//!
//! Never `Connection::system()`: that reads DBUS_SYSTEM_BUS_ADDRESS behind our back, and the
//! design rule is that the address in use is the one on the command line (or KRON_BUS, which
//! clap resolved into it). Every failure comes back as [`Error`] already classified, so the
//! commands never look at zbus errors.
#![forbid(unsafe_code)]

use std::time::Duration;

use kron_proto::{
    Delivery, Enrollment, ImportResult, LinkGrant, LinkStatus, OtpdProxy, TokenImport, UserStatus,
};
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

    pub(crate) fn fail(&self, error: zbus::Error) -> Error {
        Error::from_call(error, &self.address)
    }

    /// The proxy itself, for commands that map their own answers (`kronctl fleet`).
    pub(crate) fn proxy(&self) -> &OtpdProxy<'static> {
        &self.proxy
    }

    /// `user` empty means the caller; `code` is the validation code, if otpd asked for one.
    pub async fn enroll(&self, user: &str, code: &str) -> Result<Enrollment, Error> {
        self.proxy
            .enroll(user, code)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Has otpd send the validation code `enroll` needs.
    pub async fn send_enrollment_code(&self, user: &str) -> Result<Delivery, Error> {
        self.proxy
            .send_enrollment_code(user)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Has otpd make an enrollment and send it to the user on `channel`.
    pub async fn deliver_enrollment(&self, user: &str, channel: &str) -> Result<Delivery, Error> {
        self.proxy
            .deliver_enrollment(user, channel)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Sets (or with "" clears) a contact address. True if it changed.
    pub async fn set_contact(
        &self,
        user: &str,
        channel: &str,
        address: &str,
    ) -> Result<bool, Error> {
        self.proxy
            .set_contact(user, channel, address)
            .await
            .map_err(|e| self.fail(e))
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

    /// Up to `limit` users after `after` ("" = from the first), and the `after` of the next
    /// page ("" after the last).
    pub async fn list_page(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<UserStatus>, String), Error> {
        match self.proxy.list_page(after, limit).await {
            // An otpd older than this kronctl (an upgrade not yet restarted) has no pages: its
            // one-message `List`, which answers a store of up to 10,000 users.
            Err(e) if after.is_empty() && unknown_method(&e) => {
                let all = self.proxy.list().await.map_err(|e| self.fail(e))?;
                Ok((all, String::new()))
            }
            answer => answer.map_err(|e| self.fail(e)),
        }
    }

    /// True if there was anything to delete.
    pub async fn reset(&self, user: &str) -> Result<bool, Error> {
        self.proxy.reset(user).await.map_err(|e| self.fail(e))
    }

    /// True if the user was throttled.
    pub async fn unlock(&self, user: &str) -> Result<bool, Error> {
        self.proxy.unlock(user).await.map_err(|e| self.fail(e))
    }

    /// Makes a one-time link; `channel` "" returns its URL, "email" or "sms" sends it.
    pub async fn create_link(&self, user: &str, channel: &str) -> Result<LinkGrant, Error> {
        self.proxy
            .create_link(user, channel)
            .await
            .map_err(|e| self.fail(e))
    }

    /// True if there was a link to kill.
    pub async fn revoke_link(&self, user: &str) -> Result<bool, Error> {
        self.proxy.revoke_link(user).await.map_err(|e| self.fail(e))
    }

    /// `user` empty means the caller.
    pub async fn link_status(&self, user: &str) -> Result<LinkStatus, Error> {
        self.proxy.link_status(user).await.map_err(|e| self.fail(e))
    }

    /// A fresh recovery set for `user` ("" = the caller); `code` proves a self-service call.
    pub async fn recovery_codes(&self, user: &str, code: &str) -> Result<Vec<String>, Error> {
        self.proxy
            .recovery_codes(user, code)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `ImportTokens`, sent from a borrowed slice (the generated proxy method would take the
    /// tokens by value and drop their secrets unwiped), so the caller can wipe them after.
    pub async fn import_tokens(
        &self,
        tokens: &[TokenImport],
        replace: bool,
        dry_run: bool,
    ) -> Result<Vec<ImportResult>, Error> {
        self.proxy
            .inner()
            .call("ImportTokens", &(tokens, replace, dry_run))
            .await
            .map_err(|e| self.fail(e))
    }

    /// Starts a streamed export; the handle for [`Otpd::export_next`].
    pub async fn export_begin(&self, user: &str, passphrase: &str) -> Result<String, Error> {
        self.proxy
            .export_begin(user, passphrase)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The next piece of the export, the users written so far, and whether it was the last.
    pub async fn export_next(&self, handle: &str) -> Result<(Vec<u8>, u64, bool), Error> {
        self.proxy
            .export_next(handle)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Starts a streamed import; the handle for the calls below.
    pub async fn import_begin(
        &self,
        passphrase: &str,
        replace: bool,
        dry_run: bool,
    ) -> Result<String, Error> {
        self.proxy
            .import_begin(passphrase, replace, dry_run)
            .await
            .map_err(|e| self.fail(e))
    }

    pub async fn import_chunk(&self, handle: &str, data: &[u8]) -> Result<(), Error> {
        self.proxy
            .import_chunk(handle, data)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The file is sent: the number of users in it, once otpd has checked all of it.
    pub async fn import_end(&self, handle: &str) -> Result<u64, Error> {
        self.proxy
            .import_end(handle)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Up to `max` more users stored (or judged), and whether that was all.
    pub async fn import_apply(
        &self,
        handle: &str,
        max: u32,
    ) -> Result<(Vec<ImportResult>, bool), Error> {
        self.proxy
            .import_apply(handle, max)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The caller's own token as an otpauth URI.
    pub async fn export_token(&self, code: &str) -> Result<String, Error> {
        self.proxy
            .export_token(code)
            .await
            .map_err(|e| self.fail(e))
    }
}

/// Whether otpd answered that it has no such method (zbus gives D-Bus's own errors as `FDO`).
fn unknown_method(error: &zbus::Error) -> bool {
    match error {
        zbus::Error::FDO(fdo) => matches!(**fdo, zbus::fdo::Error::UnknownMethod(_)),
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod"
        }
        _ => false,
    }
}
