//! The D-Bus face of otpd: `io.kron.Otpd1` on `/io/kron/Otpd`, on the system bus and on otpd's
//! own socket alike. Each call learns the caller's uid (from the bus daemon, once per
//! connection, or from the kernel when the connection was accepted on the socket), runs the
//! engine (on a blocking thread unless the work cannot wait on anything), and replies once the
//! store's changes are on the device.

#![forbid(unsafe_code)]

use crate::clock::unix_now;
use crate::engine::Engine;
use crate::engine::fleet::OwnerArgs;
use crate::error::Error;
use crate::policy::LoginRequest;
use crate::policy::authz::Caller;
use crate::store::own_writes;
use kron_proto::{
    Delivery, Enrollment, ImportResult, LinkGrant, LinkPage, LinkStatus, OtpdError, Step,
    TokenImport, UserStatus,
};
use kron_proto::{FleetLogEntry, FleetStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::{Connection, interface};

pub struct OtpdService {
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    callers: Callers,
    calls: Arc<CallSlots>,
}

/// Calls in progress per uid, on the bus and the socket together: one user cannot have otpd
/// hold more than a few of its calls (and their arguments) at once. Root is not bounded here:
/// sshd and sudo run as root, and root could stop otpd anyway.
#[derive(Default)]
pub struct CallSlots {
    held: Mutex<HashMap<u32, usize>>,
}

/// Calls one ordinary user may have in progress at once. kronctl makes one at a time, a screen
/// locker one per login; a login's Answer may wait on a slow mail server.
const MAX_CALLS_PER_UID: usize = 4;

/// One call's share of its uid's slots, given back when the call ends.
struct CallSlot<'a> {
    slots: &'a CallSlots,
    uid: u32,
}

impl CallSlots {
    fn take(&self, caller: Caller) -> Result<Option<CallSlot<'_>>, OtpdError> {
        if caller.is_root() {
            return Ok(None);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(caller.uid).or_default();
        if *count >= MAX_CALLS_PER_UID {
            return Err(OtpdError::Failed(format!(
                "more than {MAX_CALLS_PER_UID} calls of this user in progress; try again"
            )));
        }
        *count += 1;
        Ok(Some(CallSlot {
            slots: self,
            uid: caller.uid,
        }))
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// How the service knows who calls.
enum Callers {
    /// On a bus: asked of the bus daemon per sender.
    Bus {
        /// A proxy for the bus daemon itself, built on the first call (it holds no answers).
        proxy: OnceLock<DBusProxy<'static>>,
        known: KnownCallers,
    },
    /// On otpd's own socket, one service per connection: its caller, read from the kernel
    /// (SO_PEERCRED) when it was accepted (there is no sender name peer-to-peer), and the logins
    /// it has waiting at a prompt.
    Peer {
        caller: Caller,
        waiting: Arc<Waiting>,
    },
}

/// The logins one socket connection has waiting at a prompt, so they are forgotten as soon as
/// the connection ends (sshd's child gone, sudo interrupted) rather than at their deadline.
/// At most [`MAX_WAITING`]: a connection that begins more has its oldest cancelled.
#[derive(Default)]
pub struct Waiting {
    state: Mutex<Waits>,
}

#[derive(Default)]
struct Waits {
    handles: Vec<String>,
    /// The connection has ended: a login a call still in progress begins is cancelled at once.
    closed: bool,
}

/// Logins one connection may have waiting, as many as the engine keeps for one non-root
/// caller (pam_kron has one per connection).
const MAX_WAITING: usize = 8;

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes what a call on this connection did: `answered` (a handle it sent) is done with if
    /// the call brought a step (a refused call, such as one over the calls in progress, may
    /// have left the login waiting, and it must still go when the connection ends), and a
    /// prompt step in `reply` is a new login waiting. Returns a login to be cancelled:
    /// the oldest, when that makes more than [`MAX_WAITING`], or the new one, when the
    /// connection ended while the call was in progress (a BeginLogin on a blocking thread).
    fn note(&self, answered: Option<&str>, reply: &Result<Step, OtpdError>) -> Option<String> {
        let mut waits = self.lock();
        if let Some(answered) = answered
            && reply.is_ok()
        {
            waits.handles.retain(|h| h != answered);
        }
        if let Ok(step) = reply
            && step.kind == kron_proto::StepKind::Prompt as u32
        {
            if waits.closed {
                return Some(step.handle.clone());
            }
            waits.handles.push(step.handle.clone());
            if waits.handles.len() > MAX_WAITING {
                return Some(waits.handles.remove(0));
            }
        }
        None
    }

    /// `handle` is done with (answered or cancelled).
    fn forget(&self, handle: &str) {
        self.lock().handles.retain(|h| h != handle);
    }

    /// Cancels every login still waiting; the connection has ended, and a login a call still
    /// in progress begins is cancelled as that call ends ([`Waiting::note`]).
    pub fn cancel_all(&self, engine: &Engine, caller: Caller) {
        let handles = {
            let mut waits = self.lock();
            waits.closed = true;
            std::mem::take(&mut waits.handles)
        };
        for handle in handles {
            let _ = engine.cancel(caller, &handle);
        }
    }
}

/// What the bus reported about each recent sender, so the second call of a login (Answer, on
/// the connection that sent BeginLogin) needs no second round trip to the bus daemon.
///
/// This caches nothing across connections: the key is the sender's unique connection name
/// (":1.42"), which the bus never gives to another connection while it runs, together with the
/// bus's GUID, which a restarted bus changes. A connection's credentials are fixed when it
/// connects (the bus records SO_PEERCRED then), so asking again would get the same answer.
/// Bounded: the oldest entries go first; a caller that was forgotten is simply asked about again.
#[derive(Default)]
struct KnownCallers {
    entries: Mutex<(HashMap<String, Caller>, VecDeque<String>)>,
    /// What the calls waiting for the bus daemon to say who sent them hold: bytes, calls.
    asking_bytes: AtomicUsize,
    asking_calls: AtomicUsize,
}

/// More than the connections the system bus allows at once (256 per uid by default).
const MAX_KNOWN_CALLERS: usize = 4096;

/// What the large calls waiting at once for the bus daemon to identify their sender may hold.
/// Until it has, a call counts against no uid's slots ([`CallSlots`]), yet holds its message
/// (up to 1 MiB on the bus) and its decoded arguments: without a bound, any local user's flood
/// of large calls from new connections would grow otpd until its unit's MemoryMax ended it.
/// Only calls over [`SMALL_BODY`] count against it (twice their body: the message and its
/// arguments), so such a flood cannot hold back the small calls everyone else makes (a login,
/// any kronctl command but an import); a lookup takes a round trip, and a call refused
/// meanwhile is told to try again.
const MAX_ASKING_BYTES: usize = 32 * 1024 * 1024;
/// A body this large or smaller is a small call.
const SMALL_BODY: u32 = 64 * 1024;
/// And calls of any size, each holding a task: past this many, even small ones wait.
const MAX_ASKING_CALLS: usize = 1024;
/// What a large call of `body` bytes counts as: its message and its decoded arguments.
fn asking_cost(body: u32) -> usize {
    if body <= SMALL_BODY {
        0
    } else {
        2 * body as usize
    }
}

/// One call's share of what calls waiting to be identified may hold.
struct Asking<'a> {
    known: &'a KnownCallers,
    bytes: usize,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.known
            .asking_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.known.asking_calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl KnownCallers {
    /// A share for a call whose body is `body` bytes, if the calls waiting hold less than
    /// the bounds.
    fn ask(&self, body: u32) -> Result<Asking<'_>, OtpdError> {
        let bytes = asking_cost(body);
        let held = self.asking_bytes.fetch_add(bytes, Ordering::SeqCst);
        let calls = self.asking_calls.fetch_add(1, Ordering::SeqCst);
        let asking = Asking { known: self, bytes };
        if held + bytes > MAX_ASKING_BYTES || calls >= MAX_ASKING_CALLS {
            return Err(OtpdError::Failed(
                "otpd is identifying too many callers at once; try again".into(),
            ));
        }
        Ok(asking)
    }

    fn get(&self, key: &str) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.0.get(key).copied()
    }

    fn insert(&self, key: String, caller: Caller) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, order) = &mut *entries;
        if map.insert(key.clone(), caller).is_none() {
            order.push_back(key);
        }
        while order.len() > MAX_KNOWN_CALLERS {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }
}

impl OtpdService {
    /// The service for otpd's bus connection.
    pub fn on_bus(
        engine: Arc<Engine>,
        runtime: tokio::runtime::Handle,
        calls: Arc<CallSlots>,
    ) -> Self {
        OtpdService {
            engine,
            runtime,
            callers: Callers::Bus {
                proxy: OnceLock::new(),
                known: KnownCallers::default(),
            },
            calls,
        }
    }

    /// The service for one connection accepted on otpd's socket, from `caller`; the logins it
    /// leaves waiting are noted in `waiting`.
    pub fn on_peer(
        engine: Arc<Engine>,
        runtime: tokio::runtime::Handle,
        calls: Arc<CallSlots>,
        caller: Caller,
        waiting: Arc<Waiting>,
    ) -> Self {
        OtpdService {
            engine,
            runtime,
            callers: Callers::Peer { caller, waiting },
            calls,
        }
    }

    /// On the socket, notes what a login call left waiting (see [`Waiting`]).
    fn note(&self, answered: Option<&str>, reply: &Result<Step, OtpdError>) {
        if let Callers::Peer { caller, waiting } = &self.callers
            && let Some(oldest) = waiting.note(answered, reply)
        {
            // Forgotten here, so cancelled now: left to its deadline, the connection's end
            // could not take it along.
            let _ = self.engine.cancel(*caller, &oldest);
        }
    }

    /// The caller of this message: the socket's peer; on a bus, from [`KnownCallers`] if its
    /// connection asked before, otherwise from the bus daemon.
    async fn caller(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<Caller, OtpdError> {
        let (proxy, known) = match &self.callers {
            Callers::Peer { caller, .. } => return Ok(*caller),
            Callers::Bus { proxy, known } => (proxy, known),
        };
        let sender = header
            .sender()
            .ok_or_else(|| OtpdError::AccessDenied("call without a sender".into()))?;
        let key = format!("{}/{}", connection.server_guid(), sender);
        if let Some(caller) = known.get(&key) {
            return Ok(caller);
        }
        let _asking = known.ask(header.primary().body_len())?;
        let caller = caller_of(&bus_proxy(proxy, connection).await?, header).await?;
        known.insert(key, caller);
        Ok(caller)
    }

    /// Runs `work` with the caller's identity on tokio's blocking pool (or, for [`Run::Here`],
    /// on this bus thread), then waits until the store changes it made are on the device: no
    /// reply, success or refusal, reports a change a crash could still undo.
    async fn call<T, F>(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        run: Run,
        work: F,
    ) -> Result<T, OtpdError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine, Caller, u64) -> crate::error::Result<T> + Send + 'static,
    {
        let caller = self.caller(connection, header).await?;
        let _slot = self.calls.take(caller)?;
        let (result, wrote) = match run {
            Run::Here => own_writes(|| work(&self.engine, caller, unix_now())),
            Run::Blocking => {
                let engine = self.engine.clone();
                self.runtime
                    .spawn_blocking(move || own_writes(|| work(&engine, caller, unix_now())))
                    .await
                    // A task that panicked has nothing to reply but the failure.
                    .unwrap_or_else(|e| {
                        (Err(Error::System(format!("request task failed: {e}"))), 0)
                    })
            }
        };
        let result = self.engine.durable_through(wrote).await.and(result);
        result.map_err(|e| {
            // Internal failures reach the caller only as "see the log": log them here, unless
            // they were logged where they happened (a failed store, once, not per login).
            if e.is_internal() && !e.is_reported() {
                self.engine.log_failure(&e);
            }
            OtpdError::from(e)
        })
    }
}

impl OtpdService {
    /// The link page's methods are authorized by the link token alone, so who may call them
    /// at all is left to the bus's policy file (root and kron-web's user). otpd's own socket
    /// has no such policy and is pam_kron's: they are refused there.
    fn only_on_bus(&self) -> Result<(), OtpdError> {
        match self.callers {
            Callers::Bus { .. } => Ok(()),
            Callers::Peer { .. } => Err(OtpdError::AccessDenied(
                "link methods are served on the system bus only".into(),
            )),
        }
    }
}

/// The proxy for the bus daemon on `connection`, built once.
async fn bus_proxy(
    proxy: &OnceLock<DBusProxy<'static>>,
    connection: &Connection,
) -> Result<DBusProxy<'static>, OtpdError> {
    if let Some(proxy) = proxy.get() {
        return Ok(proxy.clone());
    }
    let built = DBusProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(OtpdError::ZBus)?;
    Ok(proxy.get_or_init(|| built).clone())
}

/// Where a call's engine work runs.
enum Run {
    /// On tokio's blocking pool: anything that may wait (NSS, argon2, email, SMS, big
    /// imports) must.
    Blocking,
    /// On the bus thread itself, saving two thread hand-offs: only for work that never waits
    /// ([`Engine::answer_is_quick`]).
    Here,
}

/// The uid the bus daemon vouches for (SO_PEERCRED at connect time), never a claim.
async fn caller_of(proxy: &DBusProxy<'_>, header: &Header<'_>) -> Result<Caller, OtpdError> {
    let sender = header
        .sender()
        .ok_or_else(|| OtpdError::AccessDenied("call without a sender".into()))?
        .to_owned();
    // One round trip for uid and pid: this runs on the first call of every connection.
    let credentials = proxy
        .get_connection_credentials(sender.into())
        .await
        .map_err(|e| OtpdError::AccessDenied(format!("cannot identify the caller: {e}")))?;
    let uid = credentials
        .unix_user_id()
        .ok_or_else(|| OtpdError::AccessDenied("the bus did not report the caller's uid".into()))?;
    // Without an audit session step-up grace never applies; nothing else depends on it.
    let session = credentials.process_id().and_then(super::session::of_pid);
    Ok(Caller { uid, session })
}

#[interface(name = "io.kron.Otpd1")]
impl OtpdService {
    async fn begin_login(
        &self,
        user: String,
        service: String,
        rhost: String,
        tty: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Step, OtpdError> {
        let request = LoginRequest {
            user,
            service,
            rhost,
            tty,
        };
        let reply = self
            .call(
                connection,
                &header,
                Run::Blocking,
                move |engine, caller, now| engine.begin_login(caller, request, now),
            )
            .await;
        self.note(None, &reply);
        reply
    }

    async fn answer(
        &self,
        handle: String,
        response: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Step, OtpdError> {
        let response = zeroize::Zeroizing::new(response);
        // Who asks is known before anything of the login is looked at (a failure to tell is
        // left to `call`, which reports it).
        let run = match self.caller(connection, &header).await {
            Ok(caller) if self.engine.answer_is_quick(caller, &handle, &response) => Run::Here,
            _ => Run::Blocking,
        };
        let answered = handle.clone();
        let reply = self
            .call(connection, &header, run, move |engine, caller, now| {
                engine.answer(caller, &handle, &response, now)
            })
            .await;
        self.note(Some(&answered), &reply);
        reply
    }

    async fn cancel(
        &self,
        handle: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), OtpdError> {
        let cancelled = handle.clone();
        let reply = self
            .call(connection, &header, Run::Here, move |engine, caller, _| {
                engine.cancel(caller, &handle)
            })
            .await;
        if let Callers::Peer { waiting, .. } = &self.callers {
            waiting.forget(&cancelled);
        }
        reply
    }

    async fn enroll(
        &self,
        user: String,
        code: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Enrollment, OtpdError> {
        let code = zeroize::Zeroizing::new(code);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.enroll(caller, &user, &code, now),
        )
        .await
    }

    async fn send_enrollment_code(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Delivery, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.send_enrollment_code(caller, &user, now),
        )
        .await
    }

    async fn deliver_enrollment(
        &self,
        user: String,
        channel: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Delivery, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.deliver_enrollment(caller, &user, &channel, now),
        )
        .await
    }

    async fn set_contact(
        &self,
        user: String,
        channel: String,
        address: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _now| engine.set_contact(caller, &user, &channel, &address),
        )
        .await
    }

    async fn confirm(
        &self,
        user: String,
        code: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), OtpdError> {
        let code = zeroize::Zeroizing::new(code);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.confirm(caller, &user, &code, now),
        )
        .await
    }

    async fn status(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<UserStatus, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.status(caller, &user, now),
        )
        .await
    }

    async fn list(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<UserStatus>, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.list(caller, now),
        )
        .await
    }

    async fn list_page(
        &self,
        after: String,
        limit: u32,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(Vec<UserStatus>, String), OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.list_page(caller, &after, limit, now),
        )
        .await
    }

    async fn reset(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.reset(caller, &user),
        )
        .await
    }

    async fn unlock(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.unlock(caller, &user),
        )
        .await
    }

    async fn recovery_codes(
        &self,
        user: String,
        code: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, OtpdError> {
        let code = zeroize::Zeroizing::new(code);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.recovery_codes(caller, &user, &code, now),
        )
        .await
    }

    async fn export(
        &self,
        user: String,
        passphrase: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<u8>, OtpdError> {
        let passphrase = zeroize::Zeroizing::new(passphrase);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.export(caller, &user, &passphrase, now),
        )
        .await
    }

    async fn import(
        &self,
        data: Vec<u8>,
        passphrase: String,
        replace: bool,
        dry_run: bool,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ImportResult>, OtpdError> {
        let passphrase = zeroize::Zeroizing::new(passphrase);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.import(caller, &data, &passphrase, replace, dry_run),
        )
        .await
    }

    async fn import_tokens(
        &self,
        tokens: Vec<TokenImport>,
        replace: bool,
        dry_run: bool,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ImportResult>, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.import_tokens(caller, tokens, replace, dry_run, now),
        )
        .await
    }

    async fn export_token(
        &self,
        code: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, OtpdError> {
        let code = zeroize::Zeroizing::new(code);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.export_token(caller, &code, now),
        )
        .await
    }

    async fn export_begin(
        &self,
        user: String,
        passphrase: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, OtpdError> {
        let passphrase = zeroize::Zeroizing::new(passphrase);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.export_begin(caller, &user, &passphrase, now),
        )
        .await
    }

    async fn export_next(
        &self,
        handle: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(Vec<u8>, u64, bool), OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.export_next(caller, &handle, now),
        )
        .await
    }

    async fn import_begin(
        &self,
        passphrase: String,
        replace: bool,
        dry_run: bool,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, OtpdError> {
        let passphrase = zeroize::Zeroizing::new(passphrase);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| {
                engine.import_begin(caller, &passphrase, replace, dry_run, now)
            },
        )
        .await
    }

    async fn import_chunk(
        &self,
        handle: String,
        data: Vec<u8>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.import_chunk(caller, &handle, data, now),
        )
        .await
    }

    async fn import_end(
        &self,
        handle: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u64, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.import_end(caller, &handle, now),
        )
        .await
    }

    async fn import_apply(
        &self,
        handle: String,
        max: u32,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(Vec<ImportResult>, bool), OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.import_apply(caller, &handle, max, now),
        )
        .await
    }

    // The arguments are the D-Bus method's signature (kron-proto), plus connection and header.
    #[allow(clippy::too_many_arguments)]
    async fn fleet_init(
        &self,
        url: String,
        ca_file: String,
        ca_pem: String,
        owner_password: String,
        key_file: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>, OtpdError> {
        let runtime = self.runtime.clone();
        let owner = OwnerArgs {
            url,
            ca_file,
            ca_pem,
            password: zeroize::Zeroizing::new(owner_password),
        };
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.fleet_init(caller, &runtime, &owner, &key_file),
        )
        .await
    }

    // The arguments are the D-Bus method's signature (kron-proto), plus connection and header.
    #[allow(clippy::too_many_arguments)]
    async fn fleet_add_host(
        &self,
        name: String,
        url: String,
        ca_file: String,
        ca_pem: String,
        owner_password: String,
        password: String,
        password_file: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, OtpdError> {
        let runtime = self.runtime.clone();
        let owner = OwnerArgs {
            url,
            ca_file,
            ca_pem,
            password: zeroize::Zeroizing::new(owner_password),
        };
        let password = zeroize::Zeroizing::new(password);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| {
                engine.fleet_add_host(caller, &runtime, &owner, &name, (&password, &password_file))
            },
        )
        .await
    }

    async fn fleet_status(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<FleetStatus, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.fleet_status(caller),
        )
        .await
    }

    async fn fleet_offline_add(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.fleet_offline_add(caller, &user, now),
        )
        .await
    }

    async fn fleet_push(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ImportResult>, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.fleet_push(caller),
        )
        .await
    }

    async fn fleet_push_page(
        &self,
        after: String,
        limit: u32,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(Vec<ImportResult>, String), OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.fleet_push_page(caller, &after, limit),
        )
        .await
    }

    // The arguments are the D-Bus method's signature (kron-proto), plus connection and header.
    #[allow(clippy::too_many_arguments)]
    async fn fleet_log(
        &self,
        url: String,
        ca_file: String,
        ca_pem: String,
        password: String,
        user: String,
        limit: u32,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<FleetLogEntry>, OtpdError> {
        let runtime = self.runtime.clone();
        let owner = OwnerArgs {
            url,
            ca_file,
            ca_pem,
            password: zeroize::Zeroizing::new(password),
        };
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.fleet_log(caller, &runtime, &owner, &user, limit),
        )
        .await
    }

    async fn create_link(
        &self,
        user: String,
        channel: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<LinkGrant, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.create_link(caller, &user, &channel, now),
        )
        .await
    }

    async fn revoke_link(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, _| engine.revoke_link(caller, &user),
        )
        .await
    }

    async fn link_status(
        &self,
        user: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<LinkStatus, OtpdError> {
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.link_status(caller, &user, now),
        )
        .await
    }

    async fn show_link(
        &self,
        token: String,
        client: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<LinkPage, OtpdError> {
        self.only_on_bus()?;
        let token = zeroize::Zeroizing::new(token);
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.show_link(caller, &token, &client, now),
        )
        .await
    }

    async fn confirm_link(
        &self,
        token: String,
        code: String,
        client: String,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), OtpdError> {
        self.only_on_bus()?;
        let (token, code) = (
            zeroize::Zeroizing::new(token),
            zeroize::Zeroizing::new(code),
        );
        self.call(
            connection,
            &header,
            Run::Blocking,
            move |engine, caller, now| engine.confirm_link(caller, &token, &code, &client, now),
        )
        .await
    }

    #[zbus(property)]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_progress_are_bounded_per_user_not_for_root() {
        let slots = CallSlots::default();
        let held: Vec<_> = (0..MAX_CALLS_PER_UID)
            .map(|_| slots.take(Caller::new(1000)).unwrap())
            .collect();
        assert!(slots.take(Caller::new(1000)).is_err());
        assert!(slots.take(Caller::new(1001)).unwrap().is_some(), "per uid");
        let roots: Vec<_> = (0..100)
            .map(|_| slots.take(Caller::new(0)).unwrap())
            .collect();
        assert!(roots.iter().all(Option::is_none), "root is not counted");
        drop(held);
        assert!(
            slots.take(Caller::new(1000)).unwrap().is_some(),
            "given back"
        );
    }

    #[test]
    fn a_connection_keeps_at_most_eight_logins_waiting_the_oldest_goes() {
        let waiting = Waiting::default();
        let prompt = |handle: &str| {
            Ok(Step {
                kind: kron_proto::StepKind::Prompt as u32,
                messages: Vec::new(),
                prompt: "Code: ".into(),
                echo: false,
                handle: handle.into(),
            })
        };
        for n in 0..MAX_WAITING {
            assert_eq!(waiting.note(None, &prompt(&format!("h{n}"))), None);
        }
        assert_eq!(waiting.note(None, &prompt("h8")), Some("h0".into()));
        assert_eq!(waiting.lock().handles.len(), MAX_WAITING);
        // An answer that ends a login makes room again.
        let accepted = Ok(Step {
            kind: kron_proto::StepKind::Accept as u32,
            messages: Vec::new(),
            prompt: String::new(),
            echo: false,
            handle: String::new(),
        });
        assert_eq!(waiting.note(Some("h1"), &accepted), None);
        assert_eq!(waiting.note(None, &prompt("h9")), None);
        assert_eq!(waiting.lock().handles.len(), MAX_WAITING);
        // A refused answer (too many calls in progress) may leave its login waiting: it stays
        // noted, to be cancelled with the connection.
        let refused = Err(OtpdError::Failed("too many calls in progress".into()));
        assert_eq!(waiting.note(Some("h2"), &refused), None);
        assert!(waiting.lock().handles.contains(&"h2".to_string()));
        // Once the connection has ended, a login begun by a call still in progress is handed
        // back to be cancelled, not kept.
        waiting.lock().closed = true;
        assert_eq!(waiting.note(None, &prompt("h10")), Some("h10".into()));
        assert!(!waiting.lock().handles.contains(&"h10".to_string()));
    }

    /// What calls waiting to be identified hold is bounded: a few large ones fill it, and then
    /// small ones still pass; a share comes back when its call is done (or refused) with it.
    #[test]
    fn calls_waiting_to_be_identified_are_bounded() {
        let known = KnownCallers::default();
        let large = 1024 * 1024;
        let held: Vec<_> = std::iter::from_fn(|| known.ask(large).ok()).collect();
        assert_eq!(held.len(), MAX_ASKING_BYTES / asking_cost(large));
        assert!(known.ask(large).is_err(), "a refusal gives its share back");
        let small: Vec<_> = (0..256).map(|_| known.ask(300).unwrap()).collect();
        assert_eq!(small.len(), 256, "large calls hold no small one back");
        drop((held, small));
        assert_eq!(known.asking_bytes.load(Ordering::SeqCst), 0);
        assert_eq!(known.asking_calls.load(Ordering::SeqCst), 0);
        let many: Vec<_> = std::iter::from_fn(|| known.ask(0).ok()).collect();
        assert_eq!(many.len(), MAX_ASKING_CALLS);
    }

    #[test]
    fn known_callers_are_per_name_and_bounded() {
        let known = KnownCallers::default();
        known.insert("guid/:1.1".into(), Caller::new(1000));
        assert_eq!(known.get("guid/:1.1"), Some(Caller::new(1000)));
        assert_eq!(
            known.get("guid/:1.2"),
            None,
            "another connection is asked about"
        );
        assert_eq!(
            known.get("other-bus/:1.1"),
            None,
            "another bus is asked about"
        );
        for n in 0..MAX_KNOWN_CALLERS {
            known.insert(format!("guid/:2.{n}"), Caller::new(0));
        }
        assert_eq!(known.get("guid/:1.1"), None, "the oldest entry went first");
        let entries = known.entries.lock().unwrap();
        assert_eq!(
            (entries.0.len(), entries.1.len()),
            (MAX_KNOWN_CALLERS, MAX_KNOWN_CALLERS)
        );
    }
}
