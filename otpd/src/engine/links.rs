//! One-time enrollment links (docs/delivery.md, "Enrollment links"). An admin makes one with
//! `kronctl enroll USER --link` (or has it sent by email or SMS); kron-web shows its page and
//! confirms it, with the link's token as the only authority.
//!
//! A token is `base64url(user) "." base64url(32 random bytes)`: the user part only says whose
//! record to look in (as Django's password reset links carry the user's id), the random part
//! is the capability, stored as its SHA-256 inside the pending enrollment. Every dead,
//! unknown or malformed token gets the one [`dead`] error, so the page cannot be used as an
//! oracle; bounds are checked before anything else and no error repeats what was sent.

use super::Engine;
use super::outbound::parse_channel;
use crate::audit::Subject;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::store::link::{LinkRecord, WrongCode};
use crate::store::record::{Charge, ConfirmOutcome, Pending};
use crate::totp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kron_common::config::WebConfig;
use kron_proto::{
    LinkGrant, LinkPage, LinkStatus, MAX_CLIENT_LEN, MAX_LINK_FAILURES, MAX_LINK_TOKEN_LEN,
    MAX_RESPONSE_LEN,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Random bytes in a token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;

/// How often a confirmation is retried when the link changed between reading and confirming
/// (a wrong code typed in parallel): the comparison in the store must see the same record.
const CONFIRM_TRIES: usize = 3;

/// A token taken apart: whose record, and the hash of its random part.
#[derive(Debug, PartialEq, Eq)]
struct ParsedToken {
    user: String,
    hash: [u8; 32],
}

/// A new token for `user` and the hash to store.
fn new_token(user: &str) -> Result<(String, [u8; 32])> {
    let mut random = zeroize::Zeroizing::new([0u8; TOKEN_RANDOM_BYTES]);
    getrandom::fill(&mut *random).map_err(|e| Error::System(format!("no randomness: {e}")))?;
    let token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(user),
        URL_SAFE_NO_PAD.encode(*random)
    );
    Ok((token, Sha256::digest(*random).into()))
}

/// Takes a token apart; `None` for anything that cannot be one.
fn parse_token(token: &str) -> Option<ParsedToken> {
    let (user, random) = token.split_once('.')?;
    let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
    kron_proto::validate_user(&user).ok()?;
    let random = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.decode(random).ok()?);
    if random.len() != TOKEN_RANDOM_BYTES {
        return None;
    }
    Some(ParsedToken {
        user,
        hash: Sha256::digest(&*random).into(),
    })
}

/// The audit subject of a request from a link's page: the user, the browser's address as the
/// remote host, kron-web's uid as the caller. Never the token.
fn link_subject<'a>(user: &'a str, rhost: &'a str, caller: Caller) -> Subject<'a> {
    Subject {
        user,
        rhost,
        caller_uid: caller.uid,
        ..Subject::default()
    }
}

/// The one answer for every link that cannot be used, whatever the reason.
fn dead() -> Error {
    Error::NotFound(
        "this link is not valid: it expired, was used or withdrawn, or never existed".into(),
    )
}

impl Engine {
    /// `[web]`, without which there are no links.
    fn web(&self) -> Result<&WebConfig> {
        self.config.web.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "otpd has no [web] section in its config: links need kron-web \
                 (docs/delivery.md)"
                    .into(),
            )
        })
    }

    /// Makes a link for `user` (admin): a new pending enrollment, valid for `link_validity`,
    /// that only the link's page shows. `channel` "" returns the URL; "email" or "sms" sends it
    /// to the user instead (within the send budget) and returns only where it went.
    pub fn create_link(
        &self,
        caller: Caller,
        user: &str,
        channel: &str,
        now: u64,
    ) -> Result<LinkGrant> {
        caller.require_admin(&self.config, &*self.directory)?;
        // The page shows the seed, which a fleet host never holds (docs/fleet.md).
        self.require_local_seeds("a one-time enrollment link")?;
        let channel = match channel {
            "" => None,
            name => Some(parse_channel(name)?),
        };
        let web = self.web()?;
        let user = self.managed_target(caller, user)?;
        self.existing_account(&user)?;
        let record = self.store.get(&user)?;
        if record.as_ref().is_some_and(|r| r.token.is_some()) {
            return Err(super::outbound::already_enrolled(&user));
        }
        let address = channel
            .map(|c| self.delivery_address(&user, record.as_ref(), c))
            .transpose()?;
        let (token, hash) = new_token(&user)?;
        let url = zeroize::Zeroizing::new(web.link_url(&token));
        let (mut pending, seed) = self.new_pending(&user, now, false)?;
        pending.expires = now.saturating_add(web.link_validity);
        pending.link = Some(LinkRecord {
            hash: hash.to_vec(),
            created: now,
            failures: 0,
            sent: channel,
        });
        let subject = Subject {
            user: &user,
            caller_uid: caller.uid,
            ..Subject::default()
        };
        let until = crate::delivery::utc_date_time(pending.expires);
        let grant = match channel.zip(address) {
            Some((channel, address)) => {
                let content = crate::delivery::Content::Link {
                    url: &url,
                    expires: pending.expires,
                };
                let masked = self.send_pending(
                    &subject,
                    record.as_ref(),
                    (channel, &address),
                    (&pending, &seed),
                    &content,
                    now,
                )?;
                let detail = format!("sent by {} to {masked}, until {until}", channel.as_str());
                self.audit.record("link-created", &subject, &detail);
                LinkGrant {
                    user,
                    url: String::new(),
                    expires: pending.expires,
                    channel: channel.as_str().into(),
                    destination: masked,
                }
            }
            None => {
                if !self.save_new_pending(&user, &pending, &seed)? {
                    return Err(super::outbound::already_enrolled(&user));
                }
                let detail = format!("handed to the caller, until {until}");
                self.audit.record("link-created", &subject, &detail);
                LinkGrant {
                    user,
                    url: url.to_string(),
                    expires: pending.expires,
                    channel: String::new(),
                    destination: String::new(),
                }
            }
        };
        Ok(grant)
    }

    /// Kills the link of `user` with its pending enrollment (admin). True if there was one.
    pub fn revoke_link(&self, caller: Caller, user: &str) -> Result<bool> {
        let user = self.managed_target(caller, user)?;
        let mut revoked = false;
        self.store.modify(&user, &mut |record| {
            revoked = record.revoke_link();
        })?;
        let subject = Subject {
            user: &user,
            caller_uid: caller.uid,
            ..Subject::default()
        };
        let detail = if revoked { "" } else { "no link" };
        self.audit.record("link-revoked", &subject, detail);
        Ok(revoked)
    }

    /// The live link of `user` ("" = the caller): root and admins for anyone, a user for
    /// themself, as `Status`.
    pub fn link_status(&self, caller: Caller, user: &str, now: u64) -> Result<LinkStatus> {
        let status = self.status(caller, user, now)?;
        let record = self.store.get(&status.user)?.unwrap_or_default();
        let link = record
            .live_pending(now)
            .filter(|_| record.token.is_none())
            .and_then(|p| p.link.as_ref().map(|link| (p.expires, link)))
            .filter(|(_, link)| link.failures < MAX_LINK_FAILURES);
        let Some((expires, link)) = link else {
            return Ok(LinkStatus {
                active: false,
                created: 0,
                expires: 0,
                failures: 0,
                channel: String::new(),
                destination: String::new(),
            });
        };
        let (channel, destination) = match link.sent {
            Some(channel) => {
                let masked = match channel {
                    kron_proto::Channel::Email => status.email,
                    kron_proto::Channel::Sms => status.phone,
                };
                (channel.as_str().to_owned(), masked)
            }
            None => (String::new(), String::new()),
        };
        Ok(LinkStatus {
            active: true,
            created: link.created,
            expires,
            failures: link.failures,
            channel,
            destination,
        })
    }

    /// What the page of link `token` shows, for kron-web. Opening consumes nothing (mail
    /// scanners open links before people do).
    pub fn show_link(
        &self,
        caller: Caller,
        token: &str,
        client: &str,
        now: u64,
    ) -> Result<LinkPage> {
        let (parsed, client) = self.admit_link_request(token, client, now)?;
        let record = self.store.get(&parsed.user)?.unwrap_or_default();
        let pending = record.live_link(&parsed.hash, now).ok_or_else(dead)?;
        let failures = pending.link.as_ref().map_or(0, |l| l.failures);
        let secret = self.key.open(&parsed.user, &pending.token.secret)?;
        let uri = self.otpauth_uri(&parsed.user, &secret, pending.token.params)?;
        let rhost = client.to_string();
        let subject = link_subject(&parsed.user, &rhost, caller);
        self.audit.record("link-opened", &subject, "");
        Ok(LinkPage {
            issuer: self.config.issuer.clone(),
            user: parsed.user,
            host: self.hostname.clone(),
            uri,
            secret: totp::base32(&secret),
            expires: pending.expires,
            attempts_left: MAX_LINK_FAILURES.saturating_sub(failures),
        })
    }

    /// Confirms the enrollment of link `token` with `code`, for kron-web: the token becomes the
    /// user's and the link dies, in one store change. A wrong code is counted against the link
    /// (the fifth kills it) and answered `Rejected`.
    pub fn confirm_link(
        &self,
        caller: Caller,
        token: &str,
        code: &str,
        client: &str,
        now: u64,
    ) -> Result<()> {
        if code.len() > MAX_RESPONSE_LEN {
            return Err(Error::InvalidArgument("code too long".into()));
        }
        let (parsed, client) = self.admit_link_request(token, client, now)?;
        let user = parsed.user.as_str();
        let rhost = client.to_string();
        let subject = link_subject(user, &rhost, caller);
        for _ in 0..CONFIRM_TRIES {
            let record = self.store.get(user)?.unwrap_or_default();
            let pending: Pending = record
                .live_link(&parsed.hash, now)
                .ok_or_else(dead)?
                .clone();
            let secret = self.key.open(user, &pending.token.secret)?;
            let params = pending.token.params;
            let skew = self.config.totp.skew;
            let Some(step) = totp::matching_step(&secret, params, skew, code, now, None) else {
                let mut outcome = WrongCode::Gone;
                self.store.modify(user, &mut |record| {
                    outcome = record.wrong_link_code(&parsed.hash, now);
                })?;
                return match outcome {
                    WrongCode::Counted { left } => {
                        let detail = format!("wrong code, {left} left");
                        self.audit.record("link-rejected", &subject, &detail);
                        Err(Error::Rejected(format!("wrong code; {left} attempts left")))
                    }
                    WrongCode::Killed => {
                        let detail = "wrong code, the link is dead";
                        self.audit.record("link-rejected", &subject, detail);
                        Err(Error::Rejected("wrong code; the link is dead".into()))
                    }
                    WrongCode::Gone => Err(dead()),
                };
            };
            // Not charged against the user's throttle (wrong codes count against the link), so
            // it takes nothing back from it either: failures that guesses set stay.
            match self
                .store
                .confirm(user, &pending, step, now, Charge::NotMade)?
            {
                ConfirmOutcome::Confirmed => {
                    self.grace.forget(user);
                    self.audit.record("enrolled", &subject, "by one-time link");
                    return Ok(());
                }
                // Changed meanwhile: look again (it may have died, or only counted a failure).
                ConfirmOutcome::NoPending => continue,
                ConfirmOutcome::Expired | ConfirmOutcome::AlreadyEnrolled => return Err(dead()),
            }
        }
        Err(dead())
    }

    /// The checks every request from the page passes first: bounds, the client's budget, a
    /// well-formed token, the link's budget.
    fn admit_link_request(
        &self,
        token: &str,
        client: &str,
        now: u64,
    ) -> Result<(ParsedToken, IpAddr)> {
        if token.len() > MAX_LINK_TOKEN_LEN {
            return Err(Error::InvalidArgument("link token too long".into()));
        }
        if client.len() > MAX_CLIENT_LEN {
            return Err(Error::InvalidArgument("client address too long".into()));
        }
        let client: IpAddr = client
            .parse()
            .map_err(|_| Error::InvalidArgument("the client is not an IP address".into()))?;
        self.links
            .spend_client(client, now)
            .map_err(|until| Error::Throttled { until })?;
        let parsed = parse_token(token).ok_or_else(dead)?;
        self.links
            .spend_link(parsed.hash, now)
            .map_err(|until| Error::Throttled { until })?;
        Ok((parsed, client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let (token, hash) = new_token("alice@EXAMPLE.COM").unwrap();
        assert!(token.len() <= MAX_LINK_TOKEN_LEN);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
        let parsed = parse_token(&token).unwrap();
        assert_eq!(parsed.user, "alice@EXAMPLE.COM");
        assert_eq!(parsed.hash, hash);
        let (other, other_hash) = new_token("alice@EXAMPLE.COM").unwrap();
        assert_ne!(token, other);
        assert_ne!(hash, other_hash);
        let longest = new_token(&"u".repeat(kron_proto::MAX_USER_LEN)).unwrap().0;
        assert!(longest.len() <= MAX_LINK_TOKEN_LEN, "{}", longest.len());
        let (user_part, random_part) = token.split_once('.').unwrap();
        for bad in [
            "",
            ".",
            "nodot",
            &format!("{user_part}."),
            &format!(".{random_part}"),
            &format!("{user_part}.{}", &random_part[1..]),
            &format!("{}.{random_part}", URL_SAFE_NO_PAD.encode("a b")),
            &format!("{user_part}.{random_part}="),
            &format!("{user_part}.{random_part}.x"),
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }
}
