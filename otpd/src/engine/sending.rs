//! One email or SMS code on its way: the send, and what its outcome changes (the audit line;
//! on a refusal the budget and the replaced code handed back). A login waits for it a bounded
//! time and leaves it to finish on its own thread after that (`Engine::send_code`).

use super::messages;
use crate::audit::{Audit, OwnedSubject};
use crate::delivery::sent::{InFlight, Purpose, SentCode};
use crate::delivery::{Content, Deliver, DeliveryError, Recipient};
use crate::error::{Error, Result};
use crate::store::Store;
use kron_proto::Channel;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a login waits for its code's server before it prompts anyway: well inside
/// pam_kron's default `timeout=5`, which counts from the call's send and covers the rest of
/// `BeginLogin` too.
pub(crate) const LOGIN_SEND_WAIT: Duration = Duration::from_secs(kron_proto::LOGIN_SEND_WAIT_SECS);

/// Sends under way at once for logins and kronctl's validation codes in this otpd; past it a
/// login is refused as throttled ([`Sent::Busy`]). Each holds a thread until its server
/// answers or its `timeout` passes, and otpd.service allows 128 tasks: tokio's blocking pool
/// (64), sled's I/O threads (about 8) and otpd's own few leave room for these. Every send also
/// needs its user's budget, so only a relay that hangs for many users at once comes near it.
pub(crate) const MAX_SENDS_IN_FLIGHT: usize = 32;

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Sent to `masked`; valid until `expires`.
    Done {
        channel: Channel,
        masked: String,
        expires: u64,
    },
    /// Handed to its own thread, the server still to answer when the login stopped waiting;
    /// valid until `expires` if it arrives.
    Underway {
        channel: Channel,
        masked: String,
        expires: u64,
    },
    /// The budget is spent until then.
    Spent { channel: Channel, until: u64 },
    /// Too many sends of this otpd are under way, or no thread could be started for this one;
    /// nothing was kept.
    Busy { channel: Channel },
    /// The server refused or could not be reached; nothing was stored.
    Failed { channel: Channel },
}

impl Sent {
    /// What the person at the prompt is told.
    pub(crate) fn message(&self, contact: &str, now: u64) -> kron_proto::Message {
        match self {
            Sent::Done {
                channel,
                masked,
                expires,
            } => messages::code_sent(*channel, masked, *expires, now),
            Sent::Underway {
                channel,
                masked,
                expires,
            } => messages::code_underway(*channel, masked, *expires, now),
            Sent::Spent { channel, until } => messages::send_spent(*channel, *until, now),
            Sent::Busy { channel } => messages::sends_busy(*channel),
            Sent::Failed { channel } => messages::send_failed(*channel, contact),
        }
    }
}

/// How long the caller of a send waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendWait {
    /// Until the server answers or the channel's `timeout` passes (kronctl).
    Whole,
    /// Until then at most (a login: `Engine::send_deadline`, counted from when otpd began on
    /// its call, so a second channel tried after a refusal shares the first one's time).
    Until(std::time::Instant),
}

/// A code reserved in the user's outbox, to be sent. Owns what it needs, so it can finish
/// after the login that made it stopped waiting.
pub(crate) struct SendJob {
    pub store: Arc<dyn Store>,
    pub audit: Arc<Audit>,
    pub delivery: Arc<dyn Deliver>,
    /// Marks the code as on its way until the outcome is written.
    pub in_flight: InFlight,
    pub subject: OwnedSubject,
    pub channel: Channel,
    pub address: String,
    pub masked: String,
    pub code: Zeroizing<String>,
    /// Seconds the code is valid: `expires` less `now`.
    pub valid_for: u64,
    pub purpose: Purpose,
    pub mac: Vec<u8>,
    /// The live code the reservation replaced, put back if the server refuses this one.
    pub replaced: Option<SentCode>,
    pub expires: u64,
    pub now: u64,
}

impl SendJob {
    /// Sends and writes the outcome. With a `limit`, the send runs on its own thread: `None`
    /// if the server has not answered within it (the thread then writes the outcome itself).
    /// An outcome that comes in time is written on the calling thread, so the caller's reply
    /// waits for its writes as every reply does (`store::own_writes`).
    pub fn run_within(self, limit: Option<Duration>) -> Result<Option<Sent>> {
        let Some(limit) = limit else {
            let result = self.deliver();
            return self.finish(result).map(Some);
        };
        let (give, take) = mpsc::channel::<SendJob>();
        // A rendezvous: the hand-back succeeds only while the caller still waits, so exactly
        // one side writes the outcome.
        let (done, outcome) = mpsc::sync_channel::<(SendJob, DeliveryResult)>(0);
        let spawned = std::thread::Builder::new()
            .name("otpd-send".into())
            .spawn(move || {
                let Ok(job) = take.recv() else { return };
                let result = job.deliver();
                if let Err(mpsc::SendError((job, result))) = done.send((job, result)) {
                    let audit = Arc::clone(&job.audit);
                    if let Err(e) = job.finish(result) {
                        // Left counted, its code live: as a send the server may have taken.
                        audit.daemon(&format!("a send's outcome could not be recorded: {e}"));
                    }
                }
            });
        let audit = Arc::clone(&self.audit);
        let handed = match spawned {
            Ok(_) => give.send(self).map_err(|mpsc::SendError(job)| job),
            Err(_) => Err(self),
        };
        if let Err(job) = handed {
            // No thread to be had (otpd at its task limit): handed back as unsent, without
            // waiting for a server here, which would hold the login past pam_kron's timeout,
            // and told as too many sends at once (the login fails closed).
            let unsent = DeliveryError::not_sent("no thread to send it on".into());
            return job.finish(Err(unsent)).map(|sent| match sent {
                Sent::Failed { channel } => Some(Sent::Busy { channel }),
                other => Some(other),
            });
        }
        match outcome.recv_timeout(limit) {
            Ok((job, result)) => job.finish(result).map(Some),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Dropping the receiver makes the thread's hand-back fail: it writes the outcome.
                drop(outcome);
                Ok(None)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                audit.daemon("a send's thread stopped without an outcome");
                Err(Error::System("the send stopped".into()))
            }
        }
    }

    fn deliver(&self) -> DeliveryResult {
        self.delivery.send(
            self.channel,
            &Recipient {
                user: self.subject.subject().user,
                address: &self.address,
            },
            &Content::Code {
                code: &self.code,
                valid_for: self.valid_for,
            },
        )
    }

    /// Records the outcome. A send the server may have taken stays counted, and its code live
    /// (it may arrive): only a refusal hands both back, and the code it replaced with them.
    fn finish(self, result: DeliveryResult) -> Result<Sent> {
        let subject = self.subject.subject();
        match result {
            Ok(()) => {
                self.audit.record(
                    "code-sent",
                    &subject,
                    &format!(
                        "{} code by {} to {}",
                        self.purpose.as_str(),
                        self.channel.as_str(),
                        self.masked
                    ),
                );
                Ok(Sent::Done {
                    channel: self.channel,
                    masked: self.masked,
                    expires: self.expires,
                })
            }
            Err(e) => {
                let released = if e.maybe_sent {
                    Ok(())
                } else {
                    let valid_for = Duration::from_secs(self.valid_for);
                    self.in_flight.refused(self.replaced.as_ref(), valid_for);
                    self.store.modify(subject.user, &mut |record| {
                        // Looked at inside the change, which is atomic for the user: of this
                        // refusal and one of the replaced code's own send, the later change
                        // sees what the earlier did.
                        let replaced = self.in_flight.put_back(self.replaced.as_ref());
                        record
                            .outbox
                            .release(self.channel, &self.mac, self.now, replaced.as_ref());
                    })
                };
                self.audit.record(
                    "send-failed",
                    &subject,
                    &format!(
                        "{} to {}: {e}{}",
                        self.channel.as_str(),
                        self.masked,
                        counted(&e)
                    ),
                );
                released.map(|()| Sent::Failed {
                    channel: self.channel,
                })
            }
        }
    }
}

type DeliveryResult = std::result::Result<(), DeliveryError>;

/// What the audit line of a failed send adds when the send stays counted.
pub(crate) fn counted(e: &DeliveryError) -> &'static str {
    if e.maybe_sent {
        " (it may have reached the server: the send stays counted)"
    } else {
        ""
    }
}
