//! A TCP proxy the test controls, in front of one host's database link: [`Proxy::cut`] drops
//! every connection and refuses new ones (a network partition for that host only),
//! [`Proxy::black_hole`] drops every connection and answers no new one (a database machine that
//! died), [`Proxy::heal`] lets them through again. Plain threads; stops on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A proxy on 127.0.0.1 forwarding to 127.0.0.1:`upstream`.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// The listening socket, owned by the accept thread, which lives as long as the proxy.
    listener: RawFd,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    /// Accept nothing: connects wait in (or, once it is full, are dropped before) the queue.
    silent: AtomicBool,
    stop: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
    /// The connection that fills the listen queue while silent.
    filler: Mutex<Option<TcpStream>>,
}

impl State {
    fn close_all(&self) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for stream in streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        Proxy::start_on("127.0.0.1", upstream)
    }

    /// A proxy listening on another loopback address (`127.0.0.2`: a name the server's
    /// certificate does not hold).
    pub fn start_on(address: &str, upstream: u16) -> Proxy {
        let listener = TcpListener::bind((address, 0)).expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let fd = listener.as_raw_fd();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, upstream, shared));
        Proxy {
            port,
            listener: fd,
            state,
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    /// Drops every connection and answers no new one, as a machine that died: the proxy takes
    /// none from its listen queue, which holds one connection of its own, so the kernel drops
    /// every SYN and a client waits out its connect timeout. Until [`Proxy::heal`].
    pub fn black_hole(&self) {
        self.state.silent.store(true, Ordering::SeqCst);
        self.state.close_all();
        self.set_backlog(0);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let filler = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .expect("fill the proxy's listen queue");
        *self.state.filler.lock().unwrap_or_else(|e| e.into_inner()) = Some(filler);
    }

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        if self.state.silent.swap(false, Ordering::SeqCst) {
            self.state
                .filler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            self.set_backlog(128);
        }
    }

    /// How many connections the kernel queues for the proxy before it drops SYNs (a listening
    /// socket takes a new backlog from another `listen`).
    fn set_backlog(&self, backlog: i32) {
        // SAFETY: `listener` is the listening socket's descriptor, open for as long as the accept
        // thread runs, which `self` outlives; listen(2) only changes its queue's length.
        let done = unsafe { libc::listen(self.listener, backlog) };
        assert_eq!(done, 0, "listen: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.close_all();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: u16, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        if state.silent.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if state.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut streams = state.streams.lock().unwrap_or_else(|e| e.into_inner());
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                streams.push(a);
                streams.push(b);
            }
        }
        std::thread::spawn(move || pump(client, server_copy));
        std::thread::spawn(move || pump(server, client_copy));
    }
}

/// Copies one direction until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
