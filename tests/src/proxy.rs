//! A TCP proxy the test controls, in front of one host's database link: [`Proxy::cut`] drops
//! every connection and refuses new ones (a network partition for that host only),
//! [`Proxy::black_hole`] answers nothing any more, on its connections or to new ones (a database
//! machine that died), [`Proxy::heal`] lets them through again. Plain threads; stops on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A proxy on 127.0.0.1 forwarding to 127.0.0.1:`upstream`.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// The listening socket (the accept thread has another handle of the same socket).
    listener: TcpListener,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    /// Accept nothing (connects wait in the queue, or are dropped before it once it is full),
    /// forward nothing (what arrives on a connection is read and dropped).
    silent: AtomicBool,
    /// Held by the accept thread from its look at `silent` until it has handled what it took
    /// from the queue: once [`Proxy::black_hole`] holds it, the thread takes nothing more.
    gate: Mutex<()>,
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
        let handle = listener
            .try_clone()
            .expect("a second handle of the listener");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, upstream, shared));
        Proxy {
            port,
            listener: handle,
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

    /// Answers nothing any more, as a machine that died: what clients send on their connections
    /// is dropped (no answer, no end), and the proxy takes no connection from its listen queue,
    /// which holds one of its own, so the kernel drops every SYN and a client waits out its
    /// connect timeout. Until [`Proxy::heal`].
    pub fn black_hole(&self) {
        self.state.silent.store(true, Ordering::SeqCst);
        // Past this, the accept thread takes nothing from the queue.
        drop(self.state.gate.lock().unwrap_or_else(|e| e.into_inner()));
        // A client that connected meanwhile loses its place in the queue.
        while let Ok((early, _)) = self.listener.accept() {
            drop(early);
        }
        self.set_backlog(0);
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        // If a client's connect took the one place first, the queue is full all the same (and
        // that client waits for an answer that never comes).
        let filler = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok();
        *self.state.filler.lock().unwrap_or_else(|e| e.into_inner()) = filler;
    }

    /// The local port of the connection that fills the listen queue while the proxy is a black
    /// hole.
    pub fn filler_port(&self) -> Option<u16> {
        let filler = self.state.filler.lock().unwrap_or_else(|e| e.into_inner());
        Some(filler.as_ref()?.local_addr().ok()?.port())
    }

    /// Lets connections through again. After [`Proxy::black_hole`], the connections it kept
    /// silent are closed (what was sent on them is lost), as a machine that came back has none.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        if self.state.silent.load(Ordering::SeqCst) {
            self.state.close_all();
            self.state
                .filler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            self.set_backlog(128);
            self.state.silent.store(false, Ordering::SeqCst);
        }
    }

    /// How many connections the kernel queues for the proxy before it drops SYNs (a listening
    /// socket takes a new backlog from another `listen`).
    fn set_backlog(&self, backlog: i32) {
        use nix::sys::socket::{Backlog, listen};
        let backlog = Backlog::new(backlog).expect("a valid backlog");
        listen(&self.listener, backlog).expect("listen again with another backlog");
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
        let gate = state.gate.lock().unwrap_or_else(|e| e.into_inner());
        if state.silent.load(Ordering::SeqCst) {
            drop(gate);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                drop(gate);
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
        let (up, down) = (state.clone(), state.clone());
        std::thread::spawn(move || pump(client, server_copy, &up));
        std::thread::spawn(move || pump(server, client_copy, &down));
    }
}

/// Copies one direction until either side closes, then closes both; drops what it reads while
/// the proxy is silent.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) if state.silent.load(Ordering::SeqCst) => {}
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
