//! A TCP proxy the test controls, in front of one host's database link: [`Proxy::cut`] drops
//! every connection and refuses new ones (a network partition for that host only),
//! [`Proxy::heal`] lets them through again. Plain threads; stops on drop.

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
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
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
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, upstream, shared));
        Proxy {
            port,
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

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
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
