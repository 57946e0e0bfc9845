//! The accept loop: one task per connection, the TLS handshake (bounded in time) when kron-web
//! terminates TLS itself, then HTTP/1.1 by hyper with the axum router as the service. Each
//! request learns the TCP peer's address ([`Peer`]); behind a proxy the router looks further.
//! The open connections ([`Open`]) are bounded in total, per client when facing browsers, and
//! each in time and requests; a full server closes the connection idle longest for a newcomer.

use axum::Router;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connections served at once, if the descriptor limit allows ([`budget`]; the unit's
/// `LimitNOFILE=8192` does). When all are taken, the one idle longest (between two requests
/// of a keep-alive, or not yet sent its first) is closed for the newcomer; when every one is
/// in the middle of a request, newcomers wait in the kernel's backlog. A person needs one or
/// two.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections one address (an IPv6 client by its /64) may hold at once when kron-web faces
/// browsers itself (TLS): a browser opens a few, so it takes many addresses to crowd others
/// out, and the idle ones of those go first. Behind a proxy every connection comes from the
/// proxy, which bounds its clients itself.
const MAX_PER_CLIENT: usize = 8;
/// Requests on one connection: the last one's response says `Connection: close`. A client
/// cannot keep a connection by sending a request every few seconds (hyper's header timer
/// starts again for each).
const MAX_REQUESTS: usize = 16;
/// Descriptors kept for everything but connections (the listener, the bus, the runtime, ...).
const RESERVED_FDS: u64 = 64;

/// Longest TLS handshake: a client that stalls it loses its slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Largest request head hyper buffers (the page's requests are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often a full server looks again for a connection to close or one that ended.
const FULL_RETRY: Duration = Duration::from_millis(20);

/// The TCP peer of a request, put into its extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A connection's request, put into its extensions: the router calls [`Serving::begin`] once
/// the request's body is in, before anything is done for it. Until then the connection may be
/// closed for a newcomer (a client trickling its body holds nothing), from then until its
/// response is written it may not.
#[derive(Clone)]
pub struct Serving(Arc<Held>);

impl Serving {
    /// Marks the connection busy; false if it was closed for a newcomer meanwhile, and then
    /// the request must not be served (nothing of it has been done).
    pub fn begin(&self) -> bool {
        self.0.try_busy()
    }
}

/// A connection's phase ([`State::phase`]): between requests, or before its first.
const IDLE: u8 = 0;
/// From its request's body being in until its response is written.
const BUSY: u8 = 1;
/// Closed for a newcomer: a request that comes now is not served.
const CLOSING: u8 = 2;

/// Connections to serve at once: [`MAX_CONNECTIONS`], fewer if the descriptor limit
/// (`RLIMIT_NOFILE`, the unit's `LimitNOFILE`) leaves less than that after [`RESERVED_FDS`].
pub fn budget() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    room.clamp(1, MAX_CONNECTIONS)
}

/// Serves `listener` until `shutdown` resolves, at most `limit` connections at once.
pub async fn run(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limit: usize,
    shutdown: impl Future<Output = ()>,
) {
    let open = Open::new(limit);
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    eprintln!("kron-web: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Facing browsers, one address holds at most its share: a connection over it takes the
        // place of its own idlest, or is closed at once.
        let client = acceptor.as_ref().map(|_| client_of(peer.ip()));
        let held = loop {
            match open.enter(client, Instant::now()) {
                Entry::Held(held) => break held,
                Entry::OverShare => continue 'accept,
                Entry::Full => tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(FULL_RETRY) => {}
                },
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let held = Arc::new(held);
            let close = held.state.close.clone();
            let work = async {
                match acceptor {
                    Some(acceptor) => {
                        // A failed handshake (a scanner, an old client) is the client's
                        // business.
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            serve(TokioIo::new(tls), peer, router, held.clone()).await;
                        }
                    }
                    None => serve(TokioIo::new(stream), peer, router, held.clone()).await,
                }
            };
            // Closed for a newcomer while idle: dropping the connection closes it.
            tokio::select! {
                () = work => {}
                () = close.notified() => {}
            }
        });
    }
}

async fn serve<I>(io: TokioIo<I>, peer: SocketAddr, router: Router, held: Arc<Held>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicUsize::new(0));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        request.extensions_mut().insert(Serving(held.clone()));
        let (router, held) = (router.clone(), held.clone());
        let last = served.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_REQUESTS;
        async move {
            let response = router.oneshot(request).await;
            response.map(|response| {
                // Idle once hyper has written the body and let it go, not when the router
                // returns: a page half written must not be closed for a newcomer.
                let mut response = response.map(|body| IdleWhenWritten { body, held });
                if last {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            })
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    // Errors here are broken or slow clients; nothing to report.
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
}

/// Whose connection it is, for [`MAX_PER_CLIENT`]: an IPv4 address, or an IPv6 client by its
/// /64 (one host gets a whole /64 and may pick any address in it), as otpd's rate limits do.
fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The connections open now: how many each client holds, and which are idle.
#[derive(Clone)]
struct Open {
    inner: Arc<Mutex<Inner>>,
    limit: usize,
}

#[derive(Default)]
struct Inner {
    next: u64,
    connections: HashMap<u64, Arc<State>>,
    per_client: HashMap<IpAddr, usize>,
}

/// A response's body, which marks its connection idle when hyper lets it go (written whole, or
/// the connection lost).
struct IdleWhenWritten {
    body: axum::body::Body,
    held: Arc<Held>,
}

impl hyper::body::Body for IdleWhenWritten {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for IdleWhenWritten {
    fn drop(&mut self) {
        self.held.set_idle(Instant::now());
    }
}

/// One connection's state, shared by its task and [`Open`].
struct State {
    client: Option<IpAddr>,
    /// [`IDLE`], [`BUSY`] or [`CLOSING`]: changed only by compare-and-swap, so a connection is
    /// never both chosen to close and serving.
    phase: AtomicU8,
    /// Since when it has been idle (or open, before its first request).
    idle_since: Mutex<Instant>,
    /// Told to close (for a newcomer, while idle).
    close: Arc<Notify>,
}

/// What [`Open::enter`] came to.
enum Entry {
    Held(Held),
    /// The client holds its share already, every one of them serving: close the new one.
    OverShare,
    /// Every place is taken by a connection in the middle of a request: wait.
    Full,
}

/// One open connection; its place is given back when dropped.
struct Held {
    open: Open,
    id: u64,
    state: Arc<State>,
}

impl Held {
    /// A request is being served: not to be closed for a newcomer. False if it was closed for
    /// one already.
    fn try_busy(&self) -> bool {
        match self
            .state
            .phase
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(phase) => phase == BUSY,
        }
    }

    /// The response is written: idle from `now` (unless closed for a newcomer meanwhile).
    fn set_idle(&self, now: Instant) {
        *self
            .state
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
        let _ = self
            .state
            .phase
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Open {
    fn new(limit: usize) -> Open {
        Open {
            inner: Arc::default(),
            limit,
        }
    }

    /// A place for a new connection of `client` (`None`: not counted per client). A client
    /// that holds [`MAX_PER_CLIENT`] gets it in place of its own connection idle longest (many
    /// people behind one address share its share), or not at all while every one of its own is
    /// in the middle of a request. When every place is taken, the connection idle longest is
    /// told to close and gives its place up at once.
    fn enter(&self, client: Option<IpAddr>, now: Instant) -> Entry {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = client
            && inner.per_client.get(&client).copied().unwrap_or(0) >= MAX_PER_CLIENT
            && !inner.close_idlest(|state| state.client == Some(client))
        {
            return Entry::OverShare;
        }
        if inner.connections.len() >= self.limit && !inner.close_idlest(|_| true) {
            return Entry::Full;
        }
        let id = inner.next;
        inner.next += 1;
        let state = Arc::new(State {
            client,
            phase: AtomicU8::new(IDLE),
            idle_since: Mutex::new(now),
            close: Arc::new(Notify::new()),
        });
        inner.connections.insert(id, state.clone());
        if let Some(client) = client {
            *inner.per_client.entry(client).or_default() += 1;
        }
        Entry::Held(Held {
            open: self.clone(),
            id,
            state,
        })
    }
}

impl Inner {
    /// Tells the idle connection among `these` that has been idle longest to close, and gives
    /// its place up; false if none of them is idle. One that has just begun a request is
    /// passed over for the next.
    fn close_idlest(&mut self, these: impl Fn(&State) -> bool) -> bool {
        let closed = loop {
            let idlest = self
                .connections
                .iter()
                .filter(|(_, state)| these(state) && state.phase.load(Ordering::Acquire) == IDLE)
                .min_by_key(|(_, state)| {
                    *state
                        .idle_since
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                })
                .map(|(&id, state)| (id, state.clone()));
            let Some((id, state)) = idlest else {
                return false;
            };
            if state
                .phase
                .compare_exchange(IDLE, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break id;
            }
        };
        if let Some(state) = self.remove(closed) {
            state.close.notify_one();
        }
        true
    }

    /// Forgets connection `id` (ended, or closed for a newcomer). Its state, if it was open.
    fn remove(&mut self, id: u64) -> Option<Arc<State>> {
        let state = self.connections.remove(&id)?;
        if let Some(client) = state.client
            && let Some(count) = self.per_client.get_mut(&client)
        {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&client);
            }
        }
        Some(state)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(entry: Entry) -> Held {
        match entry {
            Entry::Held(held) => held,
            Entry::OverShare => panic!("over its share"),
            Entry::Full => panic!("full"),
        }
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let open = Open::new(MAX_CONNECTIONS);
        let now = Instant::now();
        let (one, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mine: Vec<Held> = (0..MAX_PER_CLIENT)
            .map(|_| held(open.enter(Some(one), now)))
            .collect();
        // At its share with every one of its own serving: the newcomer is closed.
        for mine in &mine {
            assert!(mine.try_busy());
        }
        assert!(
            matches!(open.enter(Some(one), now), Entry::OverShare),
            "one over its share"
        );
        // With one of its own idle, that one makes room (people behind one address).
        mine[3].set_idle(now);
        let newcomer = held(open.enter(Some(one), now));
        {
            let told = std::pin::pin!(mine[3].state.close.notified());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(
                told.poll(&mut context).is_ready(),
                "its own idle one closes"
            );
        }
        drop(newcomer);
        let _other = held(open.enter(Some(other), now));
        // Behind the proxy (no client counted) only the total applies.
        let _proxied: Vec<Held> = (0..MAX_PER_CLIENT * 2)
            .map(|_| held(open.enter(None, now)))
            .collect();
        let (a, b): (IpAddr, IpAddr) = (
            "2001:db8:1:2::1".parse().unwrap(),
            "2001:db8:1:2:ffff::9".parse().unwrap(),
        );
        assert_eq!(client_of(a), client_of(b), "one /64, one client");
        assert_ne!(client_of(a), client_of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            client_of("::ffff:192.0.2.1".parse().unwrap()),
            client_of(one),
            "an IPv4 client over IPv6"
        );
        drop(mine);
        let again = held(open.enter(Some(one), now));
        let count = |address| {
            let inner = open.inner.lock().unwrap();
            inner.per_client.get(&address).copied()
        };
        assert_eq!(count(one), Some(1), "counts go back as connections end");
        drop(again);
        assert_eq!(count(one), None, "no entry is kept");
    }

    /// The total is far above one client's share, and a full server closes the connection
    /// idle longest for a newcomer rather than leave it waiting; connections in the middle of
    /// a request are never closed for one.
    #[test]
    fn a_full_server_closes_the_connection_idle_longest() {
        const { assert!(MAX_CONNECTIONS >= 64 * MAX_PER_CLIENT) };
        let open = Open::new(3);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let first = held(open.enter(None, at(0)));
        let second = held(open.enter(None, at(1)));
        let third = held(open.enter(None, at(2)));
        assert!(first.try_busy());
        assert!(second.try_busy());
        second.set_idle(at(5));
        // Idle longest: the third (since 2 s), not the second (idle again since 5 s), nor
        // the first (busy).
        let newcomer = held(open.enter(None, at(6)));
        let closed = |h: &Held| {
            // A close told before anyone waited is kept: the first poll is ready.
            let told = std::pin::pin!(h.state.close.notified());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            told.poll(&mut context).is_ready()
        };
        assert!(closed(&third), "the idlest is told to close");
        assert!(!closed(&second) && !closed(&first));
        // A request that comes on it now is not served: nothing of it is done.
        assert!(!third.try_busy());
        assert_eq!(open.inner.lock().unwrap().connections.len(), 3);
        drop(third);
        assert_eq!(
            open.inner.lock().unwrap().connections.len(),
            3,
            "its place was given up already"
        );
        assert!(second.try_busy());
        assert!(newcomer.try_busy());
        assert!(
            matches!(open.enter(None, at(7)), Entry::Full),
            "every one busy: the newcomer waits"
        );
        // Idle again only once its response is written (hyper lets the body go).
        let first = Arc::new(first);
        let written = IdleWhenWritten {
            body: axum::body::Body::empty(),
            held: first.clone(),
        };
        assert!(
            matches!(open.enter(None, at(8)), Entry::Full),
            "the response is not written yet"
        );
        drop(written);
        let _later = held(open.enter(None, at(9)));
        assert!(closed(&first));
    }
}
