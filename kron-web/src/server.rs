//! The accept loop: one task per connection, the TLS handshake (bounded in time) when kron-web
//! terminates TLS itself, then HTTP/1.1 by hyper with the axum router as the service. Each
//! request learns the TCP peer's address ([`Peer`]); behind a proxy the router looks further.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connections served at once; more wait in the kernel's backlog. A person needs one or two.
const MAX_CONNECTIONS: usize = 256;
/// Connections one address may hold at once when kron-web faces browsers itself (TLS): a
/// browser opens a few, so one client cannot take every slot. Behind a proxy every connection
/// comes from the proxy, which bounds its clients itself.
const MAX_PER_CLIENT: usize = 16;

/// Longest TLS handshake: a client that stalls it loses its slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Largest request head hyper buffers (the page's requests are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The TCP peer of a request, put into its extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let clients = Clients::default();
    tokio::pin!(shutdown);
    loop {
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
        // Facing browsers, one address holds at most its share; the connection over it is
        // closed at once.
        let held = match acceptor {
            Some(_) => match clients.enter(client_of(peer.ip())) {
                Some(held) => Some(held),
                None => continue,
            },
            None => None,
        };
        let slot = tokio::select! {
            () = &mut shutdown => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let (_slot, _held) = (slot, held);
            match acceptor {
                Some(acceptor) => {
                    // A failed handshake (a scanner, an old client) is the client's business.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        serve(TokioIo::new(tls), peer, router).await;
                    }
                }
                None => serve(TokioIo::new(stream), peer, router).await,
            }
        });
    }
}

async fn serve<I>(io: TokioIo<I>, peer: SocketAddr, router: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(request)
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

/// Connections each address holds now.
#[derive(Default, Clone)]
struct Clients {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection of an address; given back when dropped.
struct Held {
    clients: Clients,
    address: IpAddr,
}

impl Clients {
    /// A place for one more connection of `address`, unless it holds [`MAX_PER_CLIENT`].
    fn enter(&self, address: IpAddr) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(address).or_default();
        if *count >= MAX_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(Held {
            clients: self.clone(),
            address,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .clients
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_share_and_gets_it_back() {
        let clients = Clients::default();
        let (one, other): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let held: Vec<Held> = (0..MAX_PER_CLIENT)
            .map(|_| clients.enter(one).expect("a place"))
            .collect();
        assert!(clients.enter(one).is_none(), "one over its share");
        assert!(
            clients.enter(other).is_some(),
            "another address is not affected"
        );
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
        drop(held);
        let again = clients.enter(one).expect("a place again");
        assert_eq!(
            clients.held.lock().unwrap().get(&one),
            Some(&1),
            "counts go back as connections end"
        );
        drop(again);
        assert!(clients.held.lock().unwrap().is_empty(), "no entry is kept");
    }
}
