//! The client against scripted peers: raw sockets for what zbus's server would never send, and
//! zbus's own peer-to-peer server, as otpd runs it.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

use kron_proto::StepKind;
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};

fn method_error(name: &str, text: &str) -> zbus::Error {
    let msg = zbus::Message::method_call("/io/kron/Otpd", "BeginLogin")
        .build(&())
        .unwrap();
    zbus::Error::MethodError(
        zbus::names::OwnedErrorName::try_from(name.to_owned()).unwrap(),
        Some(text.to_owned()),
        msg,
    )
}

#[test]
fn otpd_errors_are_recognised() {
    for (name, refusal) in [
        ("io.kron.Otpd1.Error.AccessDenied", Refusal::AccessDenied),
        (
            "io.kron.Otpd1.Error.InvalidArgument",
            Refusal::InvalidArgument,
        ),
        ("io.kron.Otpd1.Error.NotFound", Refusal::NotFound),
        ("io.kron.Otpd1.Error.Conflict", Refusal::Conflict),
        ("io.kron.Otpd1.Error.Throttled", Refusal::Throttled),
        ("io.kron.Otpd1.Error.Rejected", Refusal::Rejected),
        ("io.kron.Otpd1.Error.Failed", Refusal::Failed),
    ] {
        match call_error(method_error(name, "why")) {
            Error::Otpd(got, text) => {
                assert_eq!(got, refusal);
                assert_eq!(text, "why");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn other_errors_are_unreachable_timeout_or_malformed() {
    assert!(matches!(
        call_error(method_error(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "no owner"
        )),
        Error::Unreachable(_)
    ));
    assert!(matches!(
        call_error(method_error(
            "org.freedesktop.DBus.Error.AccessDenied",
            "policy"
        )),
        Error::Unreachable(_)
    ));
    let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    assert!(matches!(
        call_error(zbus::Error::from(timed_out)),
        Error::Timeout
    ));
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert!(matches!(
        call_error(zbus::Error::from(refused)),
        Error::Unreachable(_)
    ));
    assert!(matches!(
        call_error(zbus::Error::IncorrectType),
        Error::Malformed(_)
    ));
}

#[test]
fn a_socket_another_user_listens_on_is_not_asked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // Listening as another user needs root; the suite runs as root.
    }
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = std::path::Path::new("/tmp").join(format!("pam_kron-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let path = dir.join("otpd.sock");
    // A listener of uid 65534's: what a user could leave where a misplaced socket= points.
    let mut stranger = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.bind(sys.argv[1]); s.listen(8)\n\
             print('listening', flush=True); time.sleep(30)",
        ])
        .arg(&path)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(stranger.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    let refused = DbusOtpd::connect(&Transport::Socket(path.clone()), Duration::from_secs(2));
    stranger.kill().unwrap();
    stranger.wait().unwrap();
    match refused {
        Err(Error::Unreachable(why)) => {
            assert!(why.contains("served by uid 65534, not root"), "{why}")
        }
        other => panic!("{:?}", other.err()),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of this test's own under /tmp, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::path::Path::new("/tmp").join(format!("pam_kron-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn login() -> Login {
    Login {
        user: "alice".into(),
        service: "sshd".into(),
        rhost: "192.0.2.1".into(),
        tty: "ssh".into(),
    }
}

/// A client on one end of a socket pair, and a thread running `peer` on the other.
fn against<T: Send + 'static>(
    timeout: Duration,
    expected_guid: Option<&str>,
    peer: impl FnOnce(UnixStream) -> T + Send + 'static,
) -> (DbusOtpd, JoinHandle<T>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || peer(theirs));
    let otpd = DbusOtpd::over(
        ours,
        timeout,
        effective_uid(),
        expected_guid.map(str::to_owned),
    )
    .unwrap();
    (otpd, peer)
}

/// What a server reads first: the handshake lines (through BEGIN) and the first message.
fn read_greeting_and_call(stream: &mut UnixStream) -> (Vec<u8>, Message) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the client closed before its call");
        bytes.extend_from_slice(&chunk[..n]);
        let Some(at) = bytes.windows(7).position(|w| w == b"BEGIN\r\n") else {
            continue;
        };
        let message = &bytes[at + 7..];
        if message.len() < 16 {
            continue;
        }
        let (_, _, length) =
            kron_proto::message_lengths(message[..16].try_into().unwrap()).unwrap();
        let length = length as usize;
        if message.len() < length {
            continue;
        }
        assert_eq!(message.len(), length, "nothing after the first call");
        let data = Data::new(message.to_vec(), Context::new(Endian::Little, 0));
        // SAFETY: test bytes, checked by zbus's parse.
        let call = unsafe { Message::from_bytes(data) }.unwrap();
        return (bytes[..at + 7].to_vec(), call);
    }
}

/// One whole message (little-endian, as zbus builds them here) from a client.
fn read_message(stream: &mut UnixStream) -> Message {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).unwrap();
    let (_, _, length) = kron_proto::message_lengths(&fixed).unwrap();
    let length = length as usize;
    let mut bytes = fixed.to_vec();
    bytes.resize(length, 0);
    stream.read_exact(&mut bytes[16..]).unwrap();
    let data = Data::new(bytes, Context::new(Endian::Little, 0));
    // SAFETY: test bytes, checked by zbus's parse.
    unsafe { Message::from_bytes(data) }.unwrap()
}

fn ok_line() -> Vec<u8> {
    format!("OK {}\r\n", zbus::Guid::generate()).into_bytes()
}

fn reply_to(call: &Message, step: &Step) -> Vec<u8> {
    Message::method_return(&call.header())
        .build(step)
        .unwrap()
        .data()
        .bytes()
        .to_vec()
}

/// BeginLogin against a peer that reads the handshake and the call, then answers with the
/// bytes `answer` makes of the call and keeps the connection open.
fn begin_against(
    expected_guid: Option<&str>,
    answer: impl FnOnce(&Message) -> Vec<u8> + Send + 'static,
) -> Result<Step, Error> {
    let (mut otpd, _peer) = against(Duration::from_secs(5), expected_guid, |mut s| {
        let (_, call) = read_greeting_and_call(&mut s);
        s.write_all(&answer(&call)).unwrap();
        s
    });
    otpd.begin_login(&login())
}

/// `OK <guid>` and then `bytes`.
fn ok_then(bytes: &[u8]) -> Vec<u8> {
    let mut answer = ok_line();
    answer.extend_from_slice(bytes);
    answer
}

#[test]
fn the_handshake_and_the_first_call_go_out_together() {
    let (mut otpd, peer) = against(Duration::from_secs(5), None, |mut s| {
        let (greeting, call) = read_greeting_and_call(&mut s);
        let mut answer = ok_line();
        answer.extend(reply_to(&call, &Step::terminal(StepKind::Skip, vec![])));
        s.write_all(&answer).unwrap();
        (greeting, call)
    });
    let step = otpd.begin_login(&login()).unwrap();
    assert_eq!(step.validate().unwrap(), StepKind::Skip);
    let (greeting, call) = peer.join().unwrap();
    // EXTERNAL with the effective uid as its decimal digits in hex, as the spec says.
    let uid: String = effective_uid()
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        greeting,
        format!("\0AUTH EXTERNAL {uid}\r\nBEGIN\r\n").into_bytes()
    );
    let header = call.header();
    assert_eq!(header.member().unwrap().as_str(), "BeginLogin");
    assert_eq!(header.interface().unwrap().as_str(), INTERFACE);
    assert_eq!(header.path().unwrap().as_str(), OBJECT_PATH);
    assert_eq!(header.destination().unwrap().as_str(), BUS_NAME);
    let args: (String, String, String, String) = call.body().deserialize().unwrap();
    assert_eq!(
        args,
        (
            "alice".into(),
            "sshd".into(),
            "192.0.2.1".into(),
            "ssh".into()
        )
    );
}

#[test]
fn a_refused_handshake_is_unreachable() {
    match begin_against(None, |_| b"REJECTED EXTERNAL\r\n".to_vec()) {
        Err(Error::Unreachable(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_connection_over_its_limit_is_a_refusal_not_an_outage() {
    // As otpd's socket does over a uid's limit: the line, then hang up with what the client
    // sent unread (which resets the connection). One byte is read first only so that the
    // client has sent its handshake and call before the hang-up.
    let (mut otpd, peer) = against(Duration::from_secs(5), None, |mut s| {
        s.read_exact(&mut [0u8; 1]).unwrap();
        s.write_all(kron_proto::CONNECTION_LIMIT_LINE).unwrap();
        drop(s);
    });
    let outcome = otpd.begin_login(&login());
    peer.join().unwrap();
    match outcome {
        Err(e @ Error::TooManyConnections) => {
            assert_eq!(e.code(), pam::constants::PamResultCode::PAM_MAXTRIES)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_connection_refused_before_the_client_writes_is_still_a_refusal() {
    // otpd refuses at accept, so it may have said its line and hung up before the client
    // writes a byte: the write fails (EPIPE), and the line is still there to be read.
    let (mut otpd, peer) = against(Duration::from_secs(5), None, |s| {
        (&s).write_all(kron_proto::CONNECTION_LIMIT_LINE).unwrap();
    });
    peer.join().unwrap();
    assert!(matches!(
        otpd.begin_login(&login()),
        Err(Error::TooManyConnections)
    ));
}

#[test]
fn an_oversized_reply_is_refused_from_its_header() {
    // A header claiming a body of almost 4 GiB, and nothing after it: the client must refuse
    // at once, not wait for (or allocate) the body.
    let (mut otpd, peer) = against(Duration::from_secs(30), None, |mut s| {
        let _ = read_greeting_and_call(&mut s);
        let mut answer = ok_line();
        answer.extend_from_slice(b"l\x02\x00\x01");
        answer.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        answer.extend_from_slice(&7u32.to_le_bytes());
        answer.extend_from_slice(&0u32.to_le_bytes());
        s.write_all(&answer).unwrap();
        s
    });
    let started = Instant::now();
    let refused = otpd.begin_login(&login());
    assert!(
        matches!(&refused, Err(Error::Malformed(why)) if why.contains("longer than")),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(otpd.wire.received_len() < 64 * 1024);
    drop(peer);
}

#[test]
fn bytes_that_are_not_a_message_are_malformed() {
    let result = begin_against(None, |_| ok_then(&[b'x'; 64]));
    assert!(matches!(result, Err(Error::Malformed(_))), "{result:?}");
}

#[test]
fn a_peer_that_closes_before_the_reply_is_unreachable() {
    let (mut otpd, _peer) = against(Duration::from_secs(5), None, |mut s| {
        let _ = read_greeting_and_call(&mut s);
        s.write_all(&ok_line()).unwrap();
    });
    assert!(matches!(
        otpd.begin_login(&login()),
        Err(Error::Unreachable(_))
    ));
}

#[test]
fn a_silent_peer_times_out() {
    // Accepts the connection and never answers the handshake.
    let dir = TempDir::new("silent");
    let path = dir.0.join("bus");
    let listener = UnixListener::bind(&path).unwrap();
    let address = format!("unix:path={}", path.display());
    for transport in [Transport::Bus(address), Transport::Socket(path.clone())] {
        let started = Instant::now();
        let result = DbusOtpd::connect(&transport, Duration::from_secs(1))
            .and_then(|mut otpd| otpd.begin_login(&login()));
        if let (Transport::Socket(_), Err(Error::Unreachable(why))) = (&transport, &result) {
            // Not root: the socket is refused before any byte is sent.
            assert!(why.contains("not root"), "{why}");
            continue;
        }
        assert!(
            matches!(result, Err(Error::Timeout)),
            "{transport}: {result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    drop(listener);
}

#[test]
fn a_trickling_peer_times_out_at_the_deadline() {
    // One byte every 50 ms: each read succeeds, the call as a whole must still end on time.
    let (mut otpd, _peer) = against(Duration::from_secs(1), None, |mut s| {
        let _ = read_greeting_and_call(&mut s);
        let mut answer = ok_line();
        answer.extend_from_slice(b"l\x02\x00\x01");
        answer.extend_from_slice(&4096u32.to_le_bytes());
        for byte in answer.into_iter().chain(std::iter::repeat(0u8)) {
            if s.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let result = otpd.begin_login(&login());
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_guid_other_than_the_address_names_is_refused() {
    let named = zbus::Guid::generate().to_string();
    let result = begin_against(Some(&named), |call| {
        ok_then(&reply_to(call, &Step::terminal(StepKind::Accept, vec![])))
    });
    match result {
        Err(Error::Unreachable(why)) => assert!(why.contains("GUID"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn messages_other_than_the_reply_are_skipped_whatever_their_number_and_size() {
    // On a bus any local user may send signals to this connection while the person types:
    // many, and larger than any reply. None of them may end the login; only the deadline may.
    let (mut otpd, _peer) = against(Duration::from_secs(5), None, |mut s| {
        let (_, call) = read_greeting_and_call(&mut s);
        s.write_all(&ok_line()).unwrap();
        let signal = |text: &str| {
            Message::signal("/x", "org.example.Noise", "Noise")
                .build(&(text,))
                .unwrap()
                .data()
                .bytes()
                .to_vec()
        };
        for _ in 0..200 {
            s.write_all(&signal("noise")).unwrap();
        }
        s.write_all(&signal(&"x".repeat(wire::MAX_REPLY_LEN + 4096)))
            .unwrap();
        // A reply to some other call (a bus's answer to Hello) is skipped too.
        let other = Message::method_call("/", "Other").build(&()).unwrap();
        s.write_all(&reply_to(&other, &Step::terminal(StepKind::Deny, vec![])))
            .unwrap();
        s.write_all(&reply_to(&call, &Step::terminal(StepKind::Accept, vec![])))
            .unwrap();
        s
    });
    let step = otpd.begin_login(&login()).unwrap();
    assert_eq!(step.validate().unwrap(), StepKind::Accept);
    assert!(
        otpd.wire.received_len() <= 2 * 4096,
        "{}",
        otpd.wire.received_len()
    );
}

#[test]
fn a_big_endian_reply_and_bytes_after_it_are_read() {
    // The spec lets a peer choose its byte order per message; and what follows a reply in the
    // same read (here the start of a signal) is kept for the next call's reading.
    let (mut otpd, _peer) = against(Duration::from_secs(5), None, |mut s| {
        let (_, call) = read_greeting_and_call(&mut s);
        let prompt = Step {
            kind: StepKind::Prompt as u32,
            messages: vec![],
            prompt: "Code: ".into(),
            echo: false,
            handle: "h".into(),
        };
        let first = Message::method_return(&call.header())
            .endian(Endian::Big)
            .build(&prompt)
            .unwrap();
        let signal = Message::signal("/x", "org.example.Noise", "Noise")
            .build(&("noise",))
            .unwrap();
        let signal = signal.data().bytes();
        let mut answer = ok_line();
        answer.extend_from_slice(first.data().bytes());
        answer.extend_from_slice(&signal[..5]);
        s.write_all(&answer).unwrap();
        let second_call = read_message(&mut s);
        let mut answer = signal[5..].to_vec();
        answer.extend(reply_to(
            &second_call,
            &Step::terminal(StepKind::Accept, vec![]),
        ));
        s.write_all(&answer).unwrap();
        s
    });
    let prompt = otpd.begin_login(&login()).unwrap();
    assert_eq!(prompt.validate().unwrap(), StepKind::Prompt);
    assert_eq!(prompt.prompt, "Code: ");
    let accepted = otpd.answer("h", "123456").unwrap();
    assert_eq!(accepted.validate().unwrap(), StepKind::Accept);
}

#[test]
fn a_handshake_line_past_its_bound_is_malformed() {
    let result = begin_against(None, |_| {
        let mut line = b"OK ".to_vec();
        line.extend_from_slice(&[b'0'; 1000]);
        line.extend_from_slice(b"\r\n");
        line
    });
    assert!(matches!(result, Err(Error::Malformed(_))), "{result:?}");
}

#[test]
fn a_reply_of_another_shape_is_malformed() {
    let result = begin_against(None, |call| {
        let reply = Message::method_return(&call.header())
            .build(&("no step",))
            .unwrap();
        ok_then(reply.data().bytes())
    });
    assert!(matches!(result, Err(Error::Malformed(_))), "{result:?}");
}

#[test]
fn a_peer_gone_before_the_call_is_an_error_not_a_signal() {
    // In a process of its own: the test harness ignores SIGPIPE, as every Rust program does,
    // which would hide the signal; sshd and sudo do not.
    crate::bus_tests::run_child("client::tests::child_peer_gone_with_sigpipe_default", false);
}

#[test]
#[ignore = "run by a_peer_gone_before_the_call_is_an_error_not_a_signal in a process of its own"]
fn child_peer_gone_with_sigpipe_default() {
    // SAFETY: restores the default action of one signal; no handler of ours is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // The peer closes at once: the write meets EPIPE, which must be an error, not a SIGPIPE
    // whose default action kills the process, as it would kill sshd.
    let (mut otpd, peer) = against(Duration::from_secs(5), None, drop);
    peer.join().unwrap();
    let result = otpd.begin_login(&login());
    assert!(matches!(result, Err(Error::Unreachable(_))), "{result:?}");
}

#[test]
fn a_login_against_a_zbus_server_peer_to_peer() {
    // otpd's socket is served by zbus's p2p server; it must take the pipelined handshake and
    // calls, and answer them, as it does for zbus's own client.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        // Served by zruntime's helper thread once built, as in bus_tests.
        let conn = zbus::block_on(
            zbus::connection::Builder::unix_stream(theirs)
                .server(zbus::Guid::generate())
                .p2p()
                .serve_at(OBJECT_PATH, crate::bus_tests::ScriptedOtpd)
                .build(),
        )
        .unwrap();
        let _ = wait.recv();
        drop(conn);
    });
    let mut otpd = DbusOtpd::over(ours, Duration::from_secs(5), effective_uid(), None).unwrap();
    let prompt = otpd.begin_login(&login()).unwrap();
    assert_eq!(prompt.validate().unwrap(), StepKind::Prompt);
    let accepted = otpd.answer(&prompt.handle, "123456").unwrap();
    assert_eq!(accepted.validate().unwrap(), StepKind::Accept);
    otpd.cancel("h-alice").unwrap();
    let refused = otpd.answer("nobody", "1").unwrap_err();
    assert!(
        matches!(refused, Error::Otpd(Refusal::NotFound, _)),
        "{refused:?}"
    );
    drop(otpd);
    done.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn nothing_listening_is_unreachable_not_a_hang() {
    let dir = TempDir::new("none");
    for transport in [
        Transport::Bus(format!("unix:path={}/none", dir.0.display())),
        Transport::Socket(dir.0.join("none")),
    ] {
        let result = DbusOtpd::connect(&transport, Duration::from_secs(2));
        assert!(
            matches!(result, Err(Error::Unreachable(_))),
            "{transport}: {:?}",
            result.err()
        );
    }
}

#[test]
fn a_listen_queue_full_until_the_deadline_denies_like_a_connection_limit() {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;
    // A listener that accepts nothing, its queue filled by connections of its own: anyone who
    // can connect can do that to otpd's socket, so it must not read as otpd being down.
    let dir = TempDir::new("full-queue");
    let path = dir.0.join("otpd.sock");
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let address = UnixAddr::new(&path).unwrap();
    bind(listener.as_raw_fd(), &address).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut fillers = Vec::new();
    loop {
        let filler = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        if connect(filler.as_raw_fd(), &address).is_err() {
            break;
        }
        fillers.push(filler);
        assert!(fillers.len() < 64, "the queue never filled");
    }
    let result = connect_socket(&path, Instant::now() + Duration::from_millis(200), false);
    assert!(
        matches!(result, Err(Error::TooManyConnections)),
        "{result:?}"
    );
    assert_eq!(
        result.unwrap_err().code(),
        pam::constants::PamResultCode::PAM_MAXTRIES
    );
}

#[test]
fn a_process_out_of_descriptors_is_a_local_failure_not_otpd_down() {
    // In a process of its own: the descriptor limit is the whole process's.
    crate::bus_tests::run_child(
        "client::tests::child_out_of_descriptors_is_a_local_failure",
        false,
    );
}

#[test]
#[ignore = "run by a_process_out_of_descriptors_is_a_local_failure_not_otpd_down in a process of its own"]
fn child_out_of_descriptors_is_a_local_failure() {
    // What a caller can do to a set-uid program: start it with descriptors used up to its limit.
    let dir = TempDir::new("no-fds");
    let path = dir.0.join("otpd.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: sets this (child) process's descriptor limit from a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut held = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        held.push(file);
    }
    let result = DbusOtpd::connect(&Transport::Socket(path), Duration::from_secs(1));
    let error = result.err().expect("no socket can be made");
    assert!(matches!(error, Error::Local(_)), "{error:?}");
    assert_eq!(error.code(), pam::constants::PamResultCode::PAM_SYSTEM_ERR);
}
