//! otpd's own socket: where pam_kron talks D-Bus peer-to-peer, with no bus daemon in between.
//!
//! The socket comes from systemd (`otpd.socket`, so it exists before otpd starts and outlives
//! its restarts) or, for otpd run by hand, is bound here. One thread, `otpd-login`, accepts and
//! serves every connection on zbus's own runtime: per connection it reads SO_PEERCRED, takes a
//! slot of the caller's uid (or of the owner of that subordinate uid), reads the audit session,
//! and serves `io.kron.Otpd1` with that caller until the peer hangs up. Engine work still runs
//! where the service puts it (tokio's blocking pool, or inline when it cannot wait).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use zbus::connection::Builder;
use zbus::{Guid, OwnedGuid};
use zruntime::{AsyncIo, SharedRuntime};

use super::bounded::{Calls, Limits, Oversize};
use super::peer::{
    PeerCreds, PeerSocket, UserNamespace, own_user_namespace, peer_creds, pidfd_of, real_uid,
    user_namespace,
};
use super::service::{CallSlots, OtpdService, Waiting};
use super::session;
use super::subordinate::{SUBUID, SubordinateUids};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::policy::authz::Caller;
use crate::sparse_log::SparseLog;
use kron_common::trust;

/// Largest message one connection may send. A login's largest call, BeginLogin, carries at
/// most 256 + 3 × 1,024 bytes of strings (about 3.6 KiB with its header); this leaves room for
/// the other calls of a few bounded strings. Calls that carry files (Import, ImportTokens) are
/// for the system bus, where kronctl makes them. What one uid can make otpd hold in messages
/// is this times the calls a connection may have waiting (and the one being read) times its
/// connections: 5 × 16 KiB × 64 = 5 MiB.
const MAX_MESSAGE: usize = 16 * 1024;
/// Most bytes a client's SASL handshake may take (AUTH, NEGOTIATE_UNIX_FD and BEGIN are about
/// 60).
const MAX_HANDSHAKE: usize = 1024;
/// A client that has not finished the SASL handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls that want a reply one connection may have in progress; its further messages wait
/// unread until one is answered. pam_kron makes one call at a time.
const MAX_CALLS_IN_FLIGHT: usize = 4;
/// A connection whose peer has read nothing for this long while a reply waits to be written
/// is ended (a login's replies are a few hundred bytes; only a peer that stopped reading
/// fills the socket's buffers).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the listening socket came from, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// fd 3, passed by systemd (`otpd.socket`).
    Activated,
    /// Bound by otpd at the configured path.
    Bound,
}

/// The listening socket: the one systemd passed, else a new one bound at `path` (mode 0666:
/// any local user may connect, and each is known by SO_PEERCRED, never by what it claims).
///
/// Bound only in a directory only root can change, all the way up (`trust::check`), so nobody
/// else can put something else at `path` between the bind and the chmod, which follows
/// symlinks. A missing directory is created 0755, whatever the umask: callers that are not
/// root (screen lockers, any PAM use as the user) must reach the socket.
pub fn open(path: &Path) -> Result<(UnixListener, Origin)> {
    if let Some(fd) = activated_fd().map_err(|e| system(path, "socket activation", e))? {
        // SAFETY: systemd passed fd 3 to this very process (LISTEN_PID checked) and nothing
        // else in otpd owns it.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        return Ok((listener, Origin::Activated));
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let trusted = |missing_ok| {
            trust::check(
                dir,
                trust::Kind::Dir,
                trust::Owners::root_and_me(),
                missing_ok,
            )
            .map_err(|untrusted| {
                Error::System(format!(
                    "login socket {}: refusing to serve it: {untrusted}",
                    path.display()
                ))
            })
        };
        // Before creating anything in it, and again once created.
        trusted(true)?;
        create_dirs(dir)?;
        trusted(false)?;
    }
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| system(path, "binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| system(path, "chmod", e))?;
    Ok((listener, Origin::Bound))
}

/// Creates `dir` and whatever is missing on the way to it, each 0755. otpd runs under umask
/// 077 (for its store and key), which `mkdir` would apply: hence the chmod of each one made.
fn create_dirs(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for dir in missing.into_iter().rev() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(|e| system(dir, "creating", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| system(dir, "chmod", e))?;
    }
    Ok(())
}

fn system(path: &Path, what: &str, e: io::Error) -> Error {
    Error::System(format!("login socket {}: {what}: {e}", path.display()))
}

/// Removes a socket left by an otpd that is gone. A socket someone still answers on means
/// another otpd serves it; anything that is not a socket is not ours to delete.
fn remove_stale(path: &Path) -> Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(system(path, "checking", e)),
    };
    if !metadata.file_type().is_socket() {
        return Err(Error::System(format!(
            "login socket {}: exists and is not a socket; remove it or set `socket` elsewhere",
            path.display()
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::System(format!(
            "login socket {}: another process (otpd?) is serving it",
            path.display()
        )));
    }
    std::fs::remove_file(path).map_err(|e| system(path, "removing the stale socket", e))
}

/// fd 3 if systemd started otpd for its socket (`LISTEN_PID` is ours, `LISTEN_FDS` ≥ 1), once
/// checked to be a listening unix stream socket.
fn activated_fd() -> io::Result<Option<RawFd>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if !ours || count < 1 {
        return Ok(None);
    }
    const FD: RawFd = 3;
    let option = |name| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt of one int on fd 3 into a valid, correctly sized buffer.
        let ret = unsafe {
            libc::getsockopt(
                FD,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if ret == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if option(libc::SO_DOMAIN)? != libc::AF_UNIX
        || option(libc::SO_TYPE)? != libc::SOCK_STREAM
        || option(libc::SO_ACCEPTCONN)? != 1
    {
        return Err(io::Error::other(
            "fd 3 from systemd is not a listening unix stream socket",
        ));
    }
    // SAFETY: sets close-on-exec on a descriptor this process owns.
    unsafe { libc::fcntl(FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Some(FD))
}

/// Connections held per uid. A slot is taken at accept and given back when the connection
/// ends, so one user cannot hold all of otpd's descriptors.
///
/// A set-uid program (sudo, su) connects with root's effective uid whoever runs it, so a user
/// holding thousands of sudo prompts open would fill root's slots and lock every sshd and
/// sudo login out. Once root holds [`Slots::root_unexamined`] connections, a further one from
/// a root peer is charged to the real uid of its process instead (sshd's is root's, a user's
/// sudo is the user's): below that, nothing is read, so the usual login costs no /proc read.
///
/// A user's subordinate uids (rootless containers run as them) are charged to the user
/// ([`Slots::charged_to`]): one person, one `per_user`, however many uids. Only a process in a
/// user namespace other than otpd's is a container's: one in otpd's own with such a uid is an
/// account of its own (a directory's id mapping may hand out uids inside someone's range).
struct Slots {
    per_user: u32,
    root: u32,
    /// Connections every uid but root may hold together: many users, or many uids that no
    /// range in /etc/subuid gives an owner, each with its own `per_user`, would otherwise run
    /// otpd out of descriptors and memory, every sshd login with it.
    users: u32,
    /// Whose subordinate uids are whose: a table in memory, looked up without waiting.
    subordinates: SubordinateUids,
    /// otpd's own user namespace, if it can be known: a peer in another one is a container's.
    own_namespace: Option<UserNamespace>,
    held: Mutex<Held>,
    /// How often a refusal is logged: once a minute for the whole socket, not per uid, so a
    /// user with many uids cannot flood the log with one line each.
    refusals: SparseLog,
    /// The same for refusals of root's own connections (sshd's, sudo's), on a pace of their own:
    /// the line an administrator needs when sshd logins are refused must not be crowded out by
    /// a user refused every minute.
    root_refusals: SparseLog,
}

/// Connections held, by the uid charged; a uid is listed only while it holds some, so the map
/// is as small as the connections (whatever number of uids comes and goes).
#[derive(Default)]
struct Held {
    by_uid: HashMap<u32, u32>,
    /// The sum of `by_uid` for every uid but root.
    users: u32,
}

/// One connection's share of its uid's limit.
struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

/// What [`Slots::take`] refused.
enum Refused {
    /// The uid holds its limit.
    Uid { limit: u32 },
    /// Every uid but root together hold `max_connections_users`.
    Users { limit: u32 },
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Root's connections charged to root without asking whose they are: half of root's
    /// limit, so a user's set-uid connections can take no more than that half before they
    /// count as the user's own, and root keeps the other half. Below it a login costs no /proc
    /// read: with the threshold at a user's worth (64), a busy host's 64 concurrent logins
    /// paid one each, about 0.1 ms of otpd's CPU per login here.
    fn root_unexamined(&self) -> u32 {
        (self.root / 2).max(1)
    }

    /// Whether a new connection from a root peer is to be charged to its real uid.
    fn examine_root(&self) -> bool {
        self.lock().by_uid.get(&0).copied().unwrap_or(0) >= self.root_unexamined()
    }

    /// The uid whose slots a connection of `uid` takes: the owner of a subordinate uid (never
    /// root: root's ranges are charged as themselves) if the peer runs in a user namespace
    /// other than otpd's, else `uid` itself. `peer_namespace` is asked only for a uid in a
    /// range: a /proc look, and none for the usual login. A pid reused meanwhile could only
    /// move a connection between a uid's own slots and its owner's, never grant anything.
    fn charged_to(&self, uid: u32, peer_namespace: impl FnOnce() -> Option<UserNamespace>) -> u32 {
        let Some(owner) = self.subordinates.owner_of(uid) else {
            return uid;
        };
        match (self.own_namespace, peer_namespace()) {
            (Some(own), Some(peer)) if own != peer => owner,
            _ => uid,
        }
    }

    fn take(self: &Arc<Self>, uid: u32) -> std::result::Result<Slot, Refused> {
        let limit = if uid == 0 { self.root } else { self.per_user };
        let mut held = self.lock();
        if uid != 0 && held.users >= self.users {
            return Err(Refused::Users { limit: self.users });
        }
        let count = held.by_uid.get(&uid).copied().unwrap_or(0);
        if count >= limit {
            return Err(Refused::Uid { limit });
        }
        held.by_uid.insert(uid, count + 1);
        if uid != 0 {
            held.users += 1;
        }
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

/// Whose a connection is and whose slot it takes, for the line that says it was refused.
#[derive(Clone, Copy)]
struct Charge {
    /// The uid the connection is counted for: the peer's, or for a set-uid program's the real
    /// uid of its process.
    connecting: u32,
    /// Whether `connecting` is the real uid of a root peer (a set-uid program such as sudo).
    set_uid: bool,
    /// Whose slots it takes: `connecting`, or the owner of that subordinate uid.
    charged: u32,
}

impl Charge {
    /// The log line of a refusal: whose slots are full, and who was refused.
    fn refusal(&self, refused: Refused) -> String {
        let Charge {
            connecting,
            set_uid,
            charged,
        } = *self;
        let through = if set_uid {
            " (as root, through set-uid programs such as sudo)"
        } else {
            ""
        };
        let subordinate = charged != connecting;
        // The uid refused, as a reader can tell whose it is.
        let who = if subordinate {
            let as_root = if set_uid {
                ", as root through set-uid programs such as sudo"
            } else {
                ""
            };
            format!("uid {connecting} (a subordinate uid of uid {charged}{as_root})")
        } else {
            format!("uid {charged}{through}")
        };
        match refused {
            Refused::Uid { limit } if subordinate => format!(
                "login socket: uid {charged} and its subordinate uids hold {limit} connections, \
                 their limit; refusing {who} (max_connections_per_uid)"
            ),
            Refused::Uid { limit } => format!(
                "login socket: uid {charged} holds {limit} connections, its limit{through}; \
                 refusing more (max_connections_{})",
                if charged == 0 { "root" } else { "per_uid" }
            ),
            Refused::Users { limit } => format!(
                "login socket: users other than root hold {limit} connections, their limit \
                 together; refusing {who} (max_connections_users)"
            ),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(count) = held.by_uid.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.by_uid.remove(&self.uid);
            }
            if self.uid != 0 {
                held.users -= 1;
            }
        }
    }
}

/// Resolves when the thread that serves the socket has ended. It never should: otpd then
/// exits non-zero (design invariant 10) rather than stay up with every login timing out.
pub type Ended = tokio::sync::oneshot::Receiver<()>;

/// Serves `io.kron.Otpd1` on `listener` from a thread of its own, for the rest of otpd's life;
/// the answer resolves if that thread ends.
pub fn serve(
    listener: UnixListener,
    path: PathBuf,
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    calls: Arc<CallSlots>,
) -> Result<Ended> {
    let config = engine.config();
    // The audit session matters only for step-up grace: no rule grants any, no /proc read.
    let wants_session = config.groups.iter().any(|rule| rule.grace > 0);
    let server = Arc::new(Server {
        wants_session,
        guid: Guid::generate().into(),
        slots: Arc::new(Slots {
            per_user: config.max_connections_per_uid,
            root: config.max_connections_root,
            users: config.max_connections_users,
            subordinates: {
                let engine = engine.clone();
                SubordinateUids::watch(PathBuf::from(SUBUID), &runtime, move |line| {
                    engine.log_event(line)
                })
            },
            own_namespace: own_user_namespace(),
            held: Mutex::default(),
            refusals: {
                let engine = engine.clone();
                SparseLog::new(move |line| engine.log_event(line))
            },
            root_refusals: {
                let engine = engine.clone();
                SparseLog::new(move |line| engine.log_event(line))
            },
        }),
        refusals: SparseLog::new(|_| {}),
        engine,
        runtime,
        calls,
        path,
    });
    login_thread(move || zbus::block_on(server.accept_loop(listener)))
}

/// Runs `serve` on the thread `otpd-login`; the answer resolves once it ends, by returning or
/// by a panic (the sender is dropped either way, on a panic while unwinding).
fn login_thread(serve: impl FnOnce() + Send + 'static) -> Result<Ended> {
    let (ended, answer) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("otpd-login".into())
        .spawn(move || {
            let _ended = ended;
            serve();
        })
        .map_err(|e| Error::System(format!("cannot start the login socket thread: {e}")))?;
    Ok(answer)
}

struct Server {
    /// Whether callers' audit sessions are read (some rule grants step-up grace).
    wants_session: bool,
    guid: OwnedGuid,
    slots: Arc<Slots>,
    engine: Arc<Engine>,
    runtime: tokio::runtime::Handle,
    /// Calls in progress per uid, shared with the bus.
    calls: Arc<CallSlots>,
    path: PathBuf,
    /// How often a connection's refusal (a message over the limit, a broken call) is logged:
    /// once a minute for the whole socket, not per connection, so that reconnecting in a loop
    /// cannot flood the log (and have the journal drop otpd's audit lines with the noise).
    refusals: SparseLog,
}

impl Server {
    /// Accepts for ever. The accept loop and every connection run on this thread's zbus
    /// runtime: handing each message between threads doubled a login's latency.
    async fn accept_loop(self: Arc<Self>, listener: UnixListener) {
        let accepted = SharedRuntime::current()
            .and_then(|runtime| Ok((AsyncIo::new(&runtime, listener)?, runtime)));
        let (listener, runtime) = match accepted {
            Ok(both) => both,
            Err(e) => {
                self.engine.log_event(&format!(
                    "login socket {}: cannot serve: {e}",
                    self.path.display()
                ));
                return;
            }
        };
        let engine = self.engine.clone();
        // Out of descriptors, this fails every 100 ms for as long as it lasts.
        let accept_failed = SparseLog::new(move |line| engine.log_event(line));
        loop {
            let stream = match listener.read_with(|l| l.accept()).await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    accept_failed.say(&format!("login socket: accept failed: {e}"));
                    runtime.sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            // Each connection in its own task: a client that misbehaves in the handshake ends
            // its task, never the accept loop.
            runtime
                .spawn("otpd login connection", server.serve(stream))
                .detach();
        }
    }

    /// One connection: its uid's slot, its caller, then `io.kron.Otpd1` until it hangs up.
    async fn serve(self: Arc<Self>, stream: UnixStream) {
        let creds = match peer_creds(&stream, self.wants_session) {
            Ok(creds) => creds,
            Err(e) => {
                self.engine
                    .log_event(&format!("login socket: no peer credentials: {e}"));
                return;
            }
        };
        // Whose slot the connection takes (see [`Slots`]); who the caller is stays creds.uid.
        let connecting = if creds.uid == 0 && self.slots.examine_root() {
            with_peer_pidfd(&creds, &stream, |pidfd| real_uid(creds.pid, pidfd)).unwrap_or(0)
        } else {
            creds.uid
        };
        let charge = Charge {
            set_uid: connecting != creds.uid,
            connecting,
            charged: self.slots.charged_to(connecting, || {
                with_peer_pidfd(&creds, &stream, |pidfd| user_namespace(creds.pid, pidfd))
            }),
        };
        let _slot = match self.slots.take(charge.charged) {
            Ok(slot) => slot,
            Err(refused) => {
                let log = match charge.charged {
                    0 => &self.slots.root_refusals,
                    _ => &self.slots.refusals,
                };
                log.say(&charge.refusal(refused));
                // Said, not just hung up on: a bare hang-up reads as "otpd unreachable",
                // which a stack may let through. The line fits any new socket's buffer, so
                // the write cannot block; what the caller sent is not read.
                let _ = (&stream).write(kron_proto::CONNECTION_LIMIT_LINE);
                return;
            }
        };
        let caller = Caller {
            uid: creds.uid,
            session: self
                .wants_session
                .then(|| session::of_peer(creds.pid, creds.pidfd.as_ref()))
                .flatten(),
        };
        // The pidfd was needed for the session only: one descriptor per held login, not two.
        let engine = self.engine.clone();
        let Ok(runtime) = SharedRuntime::current() else {
            return;
        };
        let limits = Limits {
            max_message: MAX_MESSAGE,
            oversize: Oversize::Refuse,
            max_handshake: Some(MAX_HANDSHAKE),
            calls: Some(Calls {
                max_in_flight: MAX_CALLS_IN_FLIGHT,
                write_timeout: WRITE_TIMEOUT,
                runtime: runtime.clone(),
            }),
            report: self.refusals.sharing(move |line| {
                engine.log_event(&format!("login socket, uid {}: {line}", caller.uid));
            }),
        };
        let socket = match PeerSocket::new(stream, &creds, limits) {
            Ok(socket) => socket,
            Err(e) => {
                self.engine
                    .log_event(&format!("login socket: cannot serve a connection: {e}"));
                return;
            }
        };
        drop(creds);
        let waiting = Arc::new(Waiting::default());
        let service = OtpdService::on_peer(
            self.engine.clone(),
            self.runtime.clone(),
            self.calls.clone(),
            caller,
            waiting.clone(),
        );
        let build = Builder::socket(socket)
            .server(Guid::from(&self.guid))
            .p2p()
            .serve_at(kron_proto::OBJECT_PATH, service)
            .build();
        let timed = runtime.timeout(HANDSHAKE_TIMEOUT, build).await;
        // A failed or slow handshake (a uid claimed that is not the caller's, garbage, a
        // message over the limit) simply ends the connection: the client sees it closed.
        let Ok(Ok(connection)) = timed else {
            return;
        };
        // A login holds its connection while the person types; the slot bounds how many.
        connection.closed().await;
        // Whatever it left waiting at a prompt will never be answered.
        waiting.cancel_all(&self.engine, caller);
    }
}

/// Runs `look` with a pidfd of the connecting process: the one read with its credentials, else
/// one made now ([`pidfd_of`]).
fn with_peer_pidfd<T>(
    creds: &PeerCreds,
    stream: &UnixStream,
    look: impl FnOnce(Option<&std::os::fd::OwnedFd>) -> T,
) -> T {
    match &creds.pidfd {
        Some(pidfd) => look(Some(pidfd)),
        None => look(pidfd_of(stream, creds.pid).as_ref()),
    }
}

/// Raises the soft limit on open descriptors to the hard one: every held login is one, and
/// the usual soft limit of 1,024 would cap them well below what a busy sshd needs.
pub fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one valid, correctly sized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots_with(per_user: u32, root: u32) -> Arc<Slots> {
        Arc::new(Slots {
            per_user,
            root,
            users: 65_536,
            subordinates: SubordinateUids::default(),
            own_namespace: None,
            held: Mutex::default(),
            refusals: SparseLog::new(|_| {}),
            root_refusals: SparseLog::new(|_| {}),
        })
    }

    #[test]
    fn slots_are_bounded_per_uid_and_given_back() {
        let slots = slots_with(2, 3);
        let a = slots.take(1000).ok().unwrap();
        let _b = slots.take(1000).ok().unwrap();
        assert!(matches!(
            slots.take(1000).err(),
            Some(Refused::Uid { limit: 2 })
        ));
        // Another user and root have their own counts.
        let _other = slots.take(1001).ok().unwrap();
        let roots: Vec<Slot> = (0..3).map(|_| slots.take(0).ok().unwrap()).collect();
        assert!(matches!(
            slots.take(0).err(),
            Some(Refused::Uid { limit: 3 })
        ));
        drop(a);
        let _again = slots.take(1000).ok().unwrap();
        drop(roots);
        assert!(slots.take(0).is_ok());
    }

    #[test]
    fn only_uids_holding_connections_are_remembered() {
        let slots = slots_with(1, 1);
        // Many uids (subordinate ids no range lists, say), each refused once, then gone.
        for uid in 1000..3000 {
            let slot = slots.take(uid).ok().unwrap();
            assert!(slots.take(uid).is_err());
            drop(slot);
        }
        assert!(slots.lock().by_uid.is_empty());
        assert_eq!(slots.lock().users, 0);
        let _held = slots.take(1).ok().unwrap();
        assert_eq!(slots.lock().by_uid.len(), 1);
    }

    #[test]
    fn users_together_hold_at_most_their_share_and_root_keeps_its_own() {
        let slots = Arc::new(Slots {
            users: 3,
            ..Arc::into_inner(slots_with(2, 2)).unwrap()
        });
        // Three uids (of no range in /etc/subuid) take the users' three places.
        let held: Vec<Slot> = (100_000..100_003)
            .map(|uid| slots.take(uid).ok().unwrap())
            .collect();
        assert!(matches!(
            slots.take(1000).err(),
            Some(Refused::Users { limit: 3 })
        ));
        let _sshd = slots.take(0).ok().expect("root has its own");
        drop(held);
        assert!(slots.take(1000).is_ok(), "given back");
    }

    /// otpd's user namespace in these tests, and a container's.
    const OTPD_NAMESPACE: UserNamespace = (1, 1);

    fn in_a_container() -> Option<UserNamespace> {
        Some((1, 2))
    }

    /// Slots whose table says uid 1000 owns 100000 to 165535 and root owns 300000 to 300009.
    fn slots_with_subordinates(per_user: u32, users: u32) -> Arc<Slots> {
        Arc::new(Slots {
            users,
            subordinates: SubordinateUids::fixed("1000:100000:65536\n0:300000:10\n"),
            own_namespace: Some(OTPD_NAMESPACE),
            ..Arc::into_inner(slots_with(per_user, 2)).unwrap()
        })
    }

    #[test]
    fn subordinate_uids_share_their_owners_limit() {
        let slots = slots_with_subordinates(3, 65_536);
        let take = |uid| slots.take(slots.charged_to(uid, in_a_container));
        let own = take(1000).ok().unwrap();
        let _container = take(100_005).ok().unwrap();
        let _other_container = take(165_535).ok().unwrap();
        assert!(matches!(
            take(100_006).err(),
            Some(Refused::Uid { limit: 3 })
        ));
        assert!(matches!(take(1000).err(), Some(Refused::Uid { limit: 3 })));
        assert_eq!(slots.lock().by_uid.get(&1000), Some(&3));
        // Others, uids past the range and the uids of root's range keep their own counts.
        for uid in [1001, 165_536, 300_005] {
            let held: Vec<Slot> = (0..3).map(|_| take(uid).ok().unwrap()).collect();
            assert!(take(uid).is_err(), "{uid}");
            drop(held);
        }
        drop(own);
        assert!(take(100_006).is_ok(), "given back to the owner");
    }

    /// A process in otpd's own user namespace with a uid inside someone's range is an account
    /// of its own (a directory's id mapping may hand such uids out): charged as itself, and so
    /// is one whose namespace cannot be known (it has gone).
    #[test]
    fn only_a_container_is_charged_to_the_owner() {
        let slots = slots_with_subordinates(3, 65_536);
        assert_eq!(slots.charged_to(100_005, in_a_container), 1000);
        assert_eq!(slots.charged_to(100_005, || Some(OTPD_NAMESPACE)), 100_005);
        assert_eq!(slots.charged_to(100_005, || None), 100_005);
        // Outside any range the peer's namespace is not even looked up.
        assert_eq!(
            slots.charged_to(1001, || panic!("looked up for a uid in no range")),
            1001
        );
        // A process's namespace as the kernel names it: otpd's own, for this test's process.
        let own = own_user_namespace().expect("/proc/self/ns/user");
        let pidfd = super::super::peer::pidfd_open(std::process::id());
        assert_eq!(
            user_namespace(std::process::id(), pidfd.as_ref()),
            Some(own)
        );
    }

    #[test]
    fn one_persons_subordinate_uids_cannot_fill_the_users_share() {
        let slots = slots_with_subordinates(2, 4);
        let take = |uid| slots.take(slots.charged_to(uid, in_a_container));
        // A container's worth of uids each trying to connect: two get through.
        let held: Vec<Slot> = (100_000..100_016)
            .filter_map(|uid| take(uid).ok())
            .collect();
        assert_eq!(held.len(), 2);
        // Another user's own logins (a screen locker's) still have their place.
        let _locker = take(1001).ok().expect("another user's login");
        let _again = take(1001).ok().expect("another user's login");
        assert!(matches!(
            take(1002).err(),
            Some(Refused::Users { limit: 4 })
        ));
        let _sshd = take(0).ok().expect("root has its own");
    }

    #[test]
    fn a_refusal_names_the_subordinate_uid_and_its_owner() {
        let refusal = |connecting, set_uid, charged, refused| {
            let charge = Charge {
                connecting,
                set_uid,
                charged,
            };
            charge.refusal(refused)
        };
        assert_eq!(
            refusal(100_005, false, 1000, Refused::Uid { limit: 64 }),
            "login socket: uid 1000 and its subordinate uids hold 64 connections, their limit; \
             refusing uid 100005 (a subordinate uid of uid 1000) (max_connections_per_uid)"
        );
        assert_eq!(
            refusal(100_005, true, 1000, Refused::Users { limit: 1024 }),
            "login socket: users other than root hold 1024 connections, their limit together; \
             refusing uid 100005 (a subordinate uid of uid 1000, as root through set-uid \
             programs such as sudo) (max_connections_users)"
        );
        // Without a subordinate uid, the lines are those of before.
        assert_eq!(
            refusal(1000, true, 1000, Refused::Uid { limit: 64 }),
            "login socket: uid 1000 holds 64 connections, its limit (as root, through set-uid \
             programs such as sudo); refusing more (max_connections_per_uid)"
        );
        assert_eq!(
            refusal(0, false, 0, Refused::Uid { limit: 4096 }),
            "login socket: uid 0 holds 4096 connections, its limit; refusing more \
             (max_connections_root)"
        );
        assert_eq!(
            refusal(1000, false, 1000, Refused::Users { limit: 1024 }),
            "login socket: users other than root hold 1024 connections, their limit together; \
             refusing uid 1000 (max_connections_users)"
        );
    }

    #[test]
    fn the_end_of_the_login_thread_is_heard_whether_it_returns_or_panics() {
        let returned = login_thread(|| ()).unwrap();
        assert!(returned.blocking_recv().is_err(), "ended");
        let panicked = login_thread(|| panic!("a panic in the accept loop")).unwrap();
        assert!(panicked.blocking_recv().is_err(), "ended");
        let (_hold, waiting) = std::sync::mpsc::channel::<()>();
        let mut serving = login_thread(move || {
            let _ = waiting.recv();
        })
        .unwrap();
        assert!(
            serving
                .try_recv()
                .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty)
        );
    }

    #[test]
    fn a_missing_directory_is_created_0755_under_umask_077() {
        use nix::sys::stat::{Mode, umask};
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("run/kron/otpd.sock");
        // otpd's umask; restored at once, as other tests create files meanwhile.
        let before = umask(Mode::from_bits_truncate(0o077));
        let opened = open(&path);
        umask(before);
        let (_listener, origin) = opened.unwrap();
        assert_eq!(origin, Origin::Bound);
        for dir in [dir.path().join("run"), dir.path().join("run/kron")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o755, "{}", dir.display());
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
    }

    #[test]
    fn a_socket_in_a_directory_others_can_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("otpd.sock");
        let refused = open(&path).err().unwrap().to_string();
        assert!(refused.contains("refusing to serve"), "{refused}");
        assert!(!path.exists());
        // A directory below it, even one otpd would create, is no better.
        let below = dir.path().join("kron/otpd.sock");
        assert!(open(&below).is_err());
        assert!(!dir.path().join("kron").exists(), "nothing created");
    }

    #[test]
    fn root_peers_are_examined_once_root_holds_half_its_limit() {
        let slots = slots_with(2, 4);
        assert!(!slots.examine_root());
        let first = slots.take(0).ok().unwrap();
        assert!(!slots.examine_root());
        let _second = slots.take(0).ok().unwrap();
        assert!(
            slots.examine_root(),
            "two of root's held: the next is examined"
        );
        drop(first);
        assert!(!slots.examine_root());
        let one = slots_with(64, 1);
        assert_eq!(one.root_unexamined(), 1);
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.sock");
        drop(UnixListener::bind(&path).unwrap());
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        let live = UnixListener::bind(&path).unwrap();
        assert!(remove_stale(&path).is_err(), "someone serves it");
        drop(live);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        assert!(remove_stale(&path).is_err());
        assert!(path.exists());
    }
}
