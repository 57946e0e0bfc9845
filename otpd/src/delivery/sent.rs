//! Codes sent by email or SMS: how they are made, what is stored of them (a MAC, never the
//! code), and the per-user, per-channel send budget. Pure functions on a user's [`Outbox`], so
//! every store applies them atomically and unit tests drive them with a fixed clock.

use kron_common::config::CodesConfig;
use kron_common::contact::Channels;
use kron_proto::Channel;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use zeroize::Zeroizing;

/// What a sent code may be used for. Part of the MAC: one purpose's code never passes the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A login instead of (or besides) the TOTP code.
    Login,
    /// Proving the contact before an enrollment is shown.
    Enrollment,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::Enrollment => "enrollment",
        }
    }
}

/// The sent code an answer may be: the one sent for `purpose` on one of `channels`, those the
/// rule deciding this login offers. A code sent during another login, under a rule that offers
/// a channel this one does not (or offers one where this one offers none), is not it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub purpose: Purpose,
    pub channels: Channels,
}

impl Expected {
    /// A code for `purpose` sent on any channel (a delivered enrollment's code, confirmed by
    /// whoever received it).
    pub fn any(purpose: Purpose) -> Expected {
        Expected {
            purpose,
            channels: Channels::of(&Channel::ALL),
        }
    }

    fn covers(&self, code: &SentCode) -> bool {
        code.purpose == self.purpose && self.channels.contains(code.channel)
    }
}

/// The one live sent code of a user, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCode {
    pub purpose: Purpose,
    pub channel: Channel,
    #[serde(with = "crate::serde_hex::hex_bytes")]
    pub mac: Vec<u8>,
    pub expires: u64,
}

/// The codes whose sends are under way in this otpd, by MAC, and those whose send was refused
/// lately. A send that replaced a live code and is then refused puts that code back unless its
/// own send was refused meanwhile (two logins of a user asking for codes at once: the first code
/// refused, the second refused after it, would otherwise bring back the first, never
/// delivered, as the code the user "was sent"). A code still on its way when that happens is
/// put back: it may arrive, and if it is refused after all its own refusal takes it away again.
#[derive(Debug, Default)]
pub struct SendsInFlight {
    state: std::sync::Mutex<Sends>,
}

#[derive(Debug, Default)]
struct Sends {
    under_way: std::collections::HashSet<Vec<u8>>,
    /// Refused sends' MACs: until when they matter, and the code each had replaced (to be put
    /// back in its place by a later refusal that would have put back the refused one). Kept
    /// until the refused code would have expired (a code before it in a chain of replacements
    /// expires no later, so nothing a put-back could reach is forgotten first), at most
    /// [`MAX_REFUSALS`]; `refused_order` lists them in the order they came.
    refused: std::collections::HashMap<Vec<u8>, (std::time::Instant, Option<SentCode>)>,
    refused_order: std::collections::VecDeque<(std::time::Instant, Vec<u8>)>,
}

/// Refusals remembered at most: each user's sends are budgeted, but a refusal hands its budget
/// back, so only this bounds the memory a relay refusing everything at once can make otpd use
/// (about 300 bytes each).
const MAX_REFUSALS: usize = 4096;

/// Refused codes a put-back steps over at most ([`InFlight::put_back`]).
const MAX_PUT_BACK_STEPS: usize = 8;

impl SendsInFlight {
    /// Marks `mac`'s send as under way until the guard is dropped, unless `limit` sends are
    /// under way already. The guard owns its share of the set: a send a login stopped waiting
    /// for finishes on a thread of its own.
    pub fn try_start(self: &Arc<Self>, mac: &[u8], limit: usize) -> Option<InFlight> {
        let mut state = self.lock();
        if state.under_way.len() >= limit {
            return None;
        }
        state.under_way.insert(mac.to_vec());
        Some(InFlight {
            sends: Arc::clone(self),
            mac: mac.to_vec(),
        })
    }

    /// How many sends are under way.
    pub fn count(&self) -> usize {
        self.lock().under_way.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sends> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One send under way ([`SendsInFlight::try_start`]).
#[must_use]
pub struct InFlight {
    sends: Arc<SendsInFlight>,
    mac: Vec<u8>,
}

impl InFlight {
    /// The server refused this send, which had replaced `replaced`; its code would have
    /// expired after `valid_for`. Remembered for [`InFlight::put_back`] until then.
    pub fn refused(&self, replaced: Option<&SentCode>, valid_for: std::time::Duration) {
        let now = std::time::Instant::now();
        let mut state = self.sends.lock();
        while let Some((until, _)) = state.refused_order.front() {
            if *until > now && state.refused_order.len() < MAX_REFUSALS {
                break;
            }
            let (until, mac) = state.refused_order.pop_front().expect("a front entry");
            if state
                .refused
                .get(&mac)
                .is_some_and(|(when, _)| *when == until)
            {
                state.refused.remove(&mac);
            }
        }
        let until = now + valid_for;
        state
            .refused
            .insert(self.mac.clone(), (until, replaced.cloned()));
        state.refused_order.push_back((until, self.mac.clone()));
    }

    /// The code a refused send puts back in place of its own: the one it replaced, or, where
    /// that one's send was refused too, what that one had replaced, and so on. Refusals land in
    /// any order: two logins' codes, both refused, the second refused last, leave the code
    /// before both live, as the first refused last does.
    pub fn put_back(&self, replaced: Option<&SentCode>) -> Option<SentCode> {
        let state = self.sends.lock();
        let mut code = replaced.cloned();
        for _ in 0..MAX_PUT_BACK_STEPS {
            match code.as_ref().and_then(|c| state.refused.get(&c.mac)) {
                Some((_, before)) => code = before.clone(),
                None => return code,
            }
        }
        // A chain this long is no user's: nothing is put back.
        None
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sends.lock().under_way.remove(&self.mac);
    }
}

/// One send that counts against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub channel: Channel,
    pub at: u64,
}

/// A user's sent code and recent sends. Kept in the store, so a restart resets nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outbox {
    pub code: Option<SentCode>,
    pub sends: Vec<Send>,
}

/// What [`Outbox::reserve`] did: whether the budget allowed the send, and the live code the new
/// one replaced if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    pub budget: Budget,
    pub replaced: Option<SentCode>,
}

/// Whether a send may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Allowed,
    /// The next send on this channel is possible at this unix time.
    Spent {
        until: u64,
    },
}

/// The result of typing a sent code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    /// Wrong, used, expired or for another purpose: told apart only in the log.
    Refused(&'static str),
}

impl Outbox {
    /// Spends one send on `channel` and stores `code` as the live one (replacing any other),
    /// unless the budget is spent. The reservation keeps the code it replaced, for
    /// [`Outbox::release`] to put back if the message cannot be sent.
    pub fn reserve(&mut self, code: SentCode, now: u64, config: &CodesConfig) -> Reservation {
        let budget = self.spend(code.channel, now, config);
        let replaced = match budget {
            Budget::Allowed => self.code.replace(code),
            Budget::Spent { .. } => None,
        };
        Reservation { budget, replaced }
    }

    /// Spends one send on `channel` unless the budget is spent. Sends older than the window are
    /// forgotten here, so the list stays at most `max_sends` per channel.
    pub fn spend(&mut self, channel: Channel, now: u64, config: &CodesConfig) -> Budget {
        self.forget_old(now, config);
        let mine: Vec<u64> = self
            .sends
            .iter()
            .filter(|s| s.channel == channel)
            .map(|s| s.at)
            .collect();
        if let Some(&last) = mine.iter().max() {
            let next = last.saturating_add(config.min_interval);
            if now < next {
                return Budget::Spent { until: next };
            }
        }
        if mine.len() >= config.max_sends as usize {
            let oldest = mine.iter().min().copied().unwrap_or(now);
            return Budget::Spent {
                until: oldest.saturating_add(config.send_window),
            };
        }
        self.sends.push(Send { channel, at: now });
        Budget::Allowed
    }

    /// Takes back a reservation whose message could not be sent: its send, and its code, in
    /// whose place the code it replaced (`replaced`) comes back: a refused send stores nothing,
    /// so it must not take away a code the user already holds. The code only if `mac` is still
    /// the live one (a later send must not be undone).
    pub fn release(&mut self, channel: Channel, mac: &[u8], at: u64, replaced: Option<&SentCode>) {
        if self.code.as_ref().is_some_and(|c| c.mac == mac) {
            self.code = replaced.cloned();
        }
        if let Some(index) = self
            .sends
            .iter()
            .rposition(|s| s.channel == channel && s.at == at)
        {
            self.sends.remove(index);
        }
    }

    /// Uses up the live code if `mac` is its MAC for `purpose` and it has not expired.
    pub fn take(&mut self, expected: Expected, mac: &[u8], now: u64) -> CodeCheck {
        let Some(code) = &self.code else {
            return CodeCheck::Refused("no code sent");
        };
        if !expected.covers(code) {
            return CodeCheck::Refused("no code sent for this purpose on a channel offered");
        }
        if now >= code.expires {
            self.code = None;
            return CodeCheck::Refused("sent code expired");
        }
        if !constant_time_eq::constant_time_eq(&code.mac, mac) {
            return CodeCheck::Refused("wrong code");
        }
        self.code = None;
        CodeCheck::Accepted
    }

    /// Whether a code for `purpose` is live (for the login to say so).
    pub fn live(&self, purpose: Purpose, now: u64) -> Option<&SentCode> {
        self.code
            .as_ref()
            .filter(|c| c.purpose == purpose && now < c.expires)
    }

    /// Whether the code `expected` is live.
    pub fn live_expected(&self, expected: Expected, now: u64) -> bool {
        self.live(expected.purpose, now)
            .is_some_and(|code| expected.covers(code))
    }

    fn forget_old(&mut self, now: u64, config: &CodesConfig) {
        self.sends
            .retain(|s| s.at.saturating_add(config.send_window) > now);
    }
}

/// A fresh code of `digits` random decimal digits, uniformly drawn.
pub fn new_code(digits: u8) -> Result<Zeroizing<String>, String> {
    let mut code = Zeroizing::new(String::with_capacity(usize::from(digits)));
    while code.len() < usize::from(digits) {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).map_err(|e| e.to_string())?;
        // 250 is the largest multiple of 10 in a byte: rejecting above it keeps digits uniform.
        if byte[0] < 250 {
            code.push(char::from(b'0' + byte[0] % 10));
        }
    }
    Ok(code)
}

/// A typed code in the shape of a sent code (digits only, spaces and dashes allowed between
/// them), or `None`.
pub fn candidate(response: &str, digits: u8) -> Option<Zeroizing<String>> {
    let code: Zeroizing<String> = Zeroizing::new(
        response
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect(),
    );
    (code.len() == usize::from(digits) && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn code(purpose: Purpose, channel: Channel, mac: u8) -> SentCode {
        SentCode {
            purpose,
            channel,
            mac: vec![mac; 32],
            expires: NOW + 300,
        }
    }

    #[test]
    fn codes_are_random_digits_and_candidates_are_strict() {
        let a = new_code(8).unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_ne!(*a, *new_code(8).unwrap(), "1 in 10^8 to collide");
        assert_eq!(
            candidate("1234 5678", 8).as_deref().map(String::as_str),
            Some("12345678")
        );
        for bad in ["1234567", "123456789", "1234567a", "email"] {
            assert!(candidate(bad, 8).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_code_passes_once_for_its_purpose_before_it_expires() {
        let mut outbox = Outbox::default();
        let config = CodesConfig::default();
        assert_eq!(
            outbox
                .reserve(code(Purpose::Login, Channel::Email, 1), NOW, &config)
                .budget,
            Budget::Allowed
        );
        assert_eq!(
            outbox.take(Expected::any(Purpose::Login), &[2; 32], NOW),
            CodeCheck::Refused("wrong code")
        );
        assert!(matches!(
            outbox.take(Expected::any(Purpose::Enrollment), &[1; 32], NOW),
            CodeCheck::Refused(_)
        ));
        assert_eq!(
            outbox.take(Expected::any(Purpose::Login), &[1; 32], NOW),
            CodeCheck::Accepted
        );
        assert!(
            matches!(
                outbox.take(Expected::any(Purpose::Login), &[1; 32], NOW),
                CodeCheck::Refused(_)
            ),
            "used"
        );

        let mut outbox = Outbox::default();
        let _ = outbox.reserve(code(Purpose::Login, Channel::Email, 1), NOW, &config);
        assert_eq!(
            outbox.take(Expected::any(Purpose::Login), &[1; 32], NOW + 300),
            CodeCheck::Refused("sent code expired")
        );
    }

    #[test]
    fn a_new_code_replaces_the_old_one() {
        let mut outbox = Outbox::default();
        let config = CodesConfig::default();
        let _ = outbox.reserve(code(Purpose::Login, Channel::Email, 1), NOW, &config);
        let reservation = outbox.reserve(code(Purpose::Login, Channel::Sms, 2), NOW, &config);
        assert_eq!(
            reservation.replaced,
            Some(code(Purpose::Login, Channel::Email, 1))
        );
        assert!(matches!(
            outbox.take(Expected::any(Purpose::Login), &[1; 32], NOW),
            CodeCheck::Refused(_)
        ));
        assert_eq!(
            outbox.take(Expected::any(Purpose::Login), &[2; 32], NOW),
            CodeCheck::Accepted
        );
    }

    #[test]
    fn sends_are_budgeted_per_channel_with_a_minimum_interval() {
        let config = CodesConfig {
            min_interval: 30,
            max_sends: 3,
            send_window: 3600,
            ..CodesConfig::default()
        };
        let mut outbox = Outbox::default();
        let email = |outbox: &mut Outbox, at| {
            outbox
                .reserve(code(Purpose::Login, Channel::Email, 1), at, &config)
                .budget
        };
        assert_eq!(email(&mut outbox, NOW), Budget::Allowed);
        assert_eq!(
            email(&mut outbox, NOW + 10),
            Budget::Spent { until: NOW + 30 }
        );
        assert_eq!(
            outbox
                .reserve(code(Purpose::Login, Channel::Sms, 1), NOW + 10, &config)
                .budget,
            Budget::Allowed,
            "the other channel has its own budget"
        );
        assert_eq!(email(&mut outbox, NOW + 30), Budget::Allowed);
        assert_eq!(email(&mut outbox, NOW + 60), Budget::Allowed);
        assert_eq!(
            email(&mut outbox, NOW + 90),
            Budget::Spent { until: NOW + 3600 }
        );
        assert_eq!(
            email(&mut outbox, NOW + 3600),
            Budget::Allowed,
            "the first send aged out"
        );
        assert!(outbox.sends.len() <= 4, "old sends are forgotten");
    }

    #[test]
    fn a_failed_send_gives_back_its_code_and_budget() {
        let config = CodesConfig {
            max_sends: 1,
            ..CodesConfig::default()
        };
        let mut outbox = Outbox::default();
        let reservation = outbox.reserve(code(Purpose::Login, Channel::Email, 1), NOW, &config);
        outbox.release(Channel::Email, &[1; 32], NOW, reservation.replaced.as_ref());
        assert_eq!(outbox, Outbox::default());
        assert_eq!(
            outbox
                .reserve(code(Purpose::Login, Channel::Email, 2), NOW, &config)
                .budget,
            Budget::Allowed
        );
    }

    #[test]
    fn a_refused_send_leaves_the_code_it_would_have_replaced() {
        let config = CodesConfig::default();
        let email = code(Purpose::Login, Channel::Email, 1);
        let mut outbox = Outbox::default();
        let _ = outbox.reserve(email.clone(), NOW, &config);
        // The user asks for a code by SMS too, and the gateway refuses it.
        let sms = outbox.reserve(code(Purpose::Login, Channel::Sms, 2), NOW + 40, &config);
        assert_eq!(sms.budget, Budget::Allowed);
        outbox.release(Channel::Sms, &[2; 32], NOW + 40, sms.replaced.as_ref());
        assert_eq!(outbox.code, Some(email));
        assert_eq!(
            outbox.take(Expected::any(Purpose::Login), &[1; 32], NOW + 41),
            CodeCheck::Accepted,
            "the email code still passes"
        );

        // A newer code that took the refused one's place stays.
        let mut outbox = Outbox::default();
        let _ = outbox.reserve(code(Purpose::Login, Channel::Email, 1), NOW, &config);
        let sms = outbox.reserve(code(Purpose::Login, Channel::Sms, 2), NOW + 40, &config);
        let _ = outbox.reserve(code(Purpose::Login, Channel::Email, 3), NOW + 80, &config);
        outbox.release(Channel::Sms, &[2; 32], NOW + 40, sms.replaced.as_ref());
        assert_eq!(outbox.code, Some(code(Purpose::Login, Channel::Email, 3)));
    }

    #[test]
    fn config_bounds() {
        assert_eq!(
            toml::from_str::<CodesConfig>("").unwrap(),
            CodesConfig::default()
        );
        for bad in [
            "digits = 10",
            "digits = 5",
            "validity = 10",
            "max_sends = 0",
            "send_window = 1",
        ] {
            assert!(toml::from_str::<CodesConfig>(bad).is_err(), "{bad}");
        }
    }

    /// The sends under way are capped as they are counted; a refused send puts back the code it
    /// replaced, stepping over codes whose own sends were refused, whatever order the refusals
    /// came in.
    #[test]
    fn sends_under_way_are_capped_and_refusals_step_back_to_a_live_code() {
        let sends = Arc::new(SendsInFlight::default());
        let first = sends.try_start(&[1; 32], 2).unwrap();
        let second = sends.try_start(&[2; 32], 2).unwrap();
        assert!(sends.try_start(&[3; 32], 2).is_none(), "over the cap");
        assert_eq!(sends.count(), 2);

        let delivered = code(Purpose::Login, Channel::Email, 0);
        let code_1 = code(Purpose::Login, Channel::Sms, 1);
        // first replaced the delivered code, second replaced first's.
        assert_eq!(
            second.put_back(Some(&code_1)),
            Some(code_1.clone()),
            "first's send may still arrive"
        );
        first.refused(Some(&delivered), std::time::Duration::from_secs(300));
        assert_eq!(second.put_back(Some(&code_1)), Some(delivered.clone()));
        drop(first);
        assert_eq!(sends.count(), 1);
        assert!(sends.try_start(&[3; 32], 2).is_some());
        assert_eq!(second.put_back(None), None);
    }
}
