//! socket-probe: talks to otpd's own socket the way no well-behaved client would, or in
//! numbers no single login reaches, and prints what happened, one word per line. The tests run
//! it as root or as a test user (it learns its uid from the kernel like everyone else).
//!
//! ```text
//! socket-probe claim SOCKET UID          EXTERNAL claiming UID -> OK | REJECTED | LIMIT | CLOSED
//! socket-probe raw SOCKET TEXT         TEXT as the first bytes, \0 \r \n written as escapes
//!                                        -> OK | REJECTED | CLOSED
//! socket-probe header SOCKET BYTES N     N connections announcing a BYTES message -> CLOSED x N
//! socket-probe hold SOCKET N             N connections through the handshake, held until
//!                                        stdin closes       -> OK | LIMIT | CLOSED, one a line
//! socket-probe logins SOCKET N PREFIX    N logins of PREFIX0.. held at the prompt at once,
//!                                        then all answered            -> "prompted N", "ended N"
//! socket-probe pipeline SOCKET N         one connection sending N Cancel calls without reading
//!                                        a reply, until they are sent or writing stalls for
//!                                        5 s; held until stdin closes  -> "sent K"
//! socket-probe unanswered SOCKET N       as pipeline, but calls of an unknown method flagged
//!                                        as wanting no reply           -> "sent K"
//! socket-probe bus-flood ADDRESS N BYTES M
//!                                        N bus connections at once, each sending M SetContact
//!                                        calls with BYTES-long arguments -> the D-Bus error name
//!                                        (or OK) of each call, one a line
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use kron_proto::{OtpdProxy, StepKind};
use zbus::address::transport::{Transport, Unix, UnixSocket};
use zbus::connection::{AuthMechanism, Builder};
use zbus::proxy::CacheProperties;

const USAGE: &str = "usage: socket-probe claim SOCKET UID | raw SOCKET TEXT | header SOCKET BYTES N | \
hold SOCKET N [UID] | logins SOCKET N PREFIX | pipeline SOCKET N | unanswered SOCKET N | \
bus-flood ADDRESS N BYTES M";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = match words.as_slice() {
        ["claim", socket, uid] => claim(socket, uid),
        ["raw", socket, text] => raw(socket, &unescape(text)),
        ["header", socket, bytes, count] => header(socket, parse(bytes), parse(count)),
        ["hold", socket, count] => hold(socket, parse(count), &my_uid()),
        // Claiming `uid`: a process in a user namespace of its own is known to otpd by the
        // uid its namespace maps to, not the one it has inside.
        ["hold", socket, count, uid] => hold(socket, parse(count), uid),
        ["logins", socket, count, prefix] => logins(socket, parse(count), prefix),
        ["pipeline", socket, count] => pipeline(socket, parse(count), &CANCEL),
        ["unanswered", socket, count] => pipeline(socket, parse(count), &UNANSWERED),
        ["bus-flood", address, count, bytes, calls] => {
            bus_flood(address, parse(count), parse(bytes), parse(calls))
        }
        _ => Err(USAGE.to_owned()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socket-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(word: &str) -> usize {
    word.parse()
        .unwrap_or_else(|_| panic!("{word:?} is not a number"))
}

fn connect(socket: &str) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends one handshake line and reads the server's answer; empty when it hung up. A write that
/// fails does not end it: a server that refuses at once may have answered and hung up before
/// the line went out, and its answer waits to be read.
fn exchange(stream: &mut UnixStream, line: &[u8]) -> String {
    let _ = stream.write_all(line);
    let mut answer = [0u8; 256];
    match stream.read(&mut answer) {
        Ok(n) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

/// The handshake's first word back: OK, REJECTED, LIMIT (otpd's line for a uid over its
/// connection limit), or CLOSED when the server hung up without a word.
fn verdict(answer: &str) -> &'static str {
    if answer.starts_with("OK ") {
        "OK"
    } else if answer.starts_with("REJECTED") {
        "REJECTED"
    } else if answer.as_bytes() == kron_proto::CONNECTION_LIMIT_LINE {
        "LIMIT"
    } else {
        "CLOSED"
    }
}

fn auth_line(uid: &str) -> Vec<u8> {
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    format!("\0AUTH EXTERNAL {hex}\r\n").into_bytes()
}

fn my_uid() -> String {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }.to_string()
}

fn claim(socket: &str, uid: &str) -> Result<(), String> {
    let mut stream = connect(socket)?;
    println!("{}", verdict(&exchange(&mut stream, &auth_line(uid))));
    Ok(())
}

/// `\0`, `\r` and `\n` as the bytes they name: an argument cannot hold a NUL.
fn unescape(text: &str) -> String {
    text.replace("\\0", "\0")
        .replace("\\r", "\r")
        .replace("\\n", "\n")
}

fn raw(socket: &str, text: &str) -> Result<(), String> {
    let mut stream = connect(socket)?;
    println!("{}", verdict(&exchange(&mut stream, text.as_bytes())));
    Ok(())
}

fn header(socket: &str, bytes: usize, count: usize) -> Result<(), String> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = connect(socket)?;
        if verdict(&exchange(&mut stream, &auth_line(&my_uid()))) != "OK" {
            println!("CLOSED");
            continue;
        }
        let _ = stream.write_all(b"BEGIN\r\n");
        // A method call header announcing `bytes` of body, and no body.
        let mut head = vec![b'l', 1, 0, 1];
        head.extend_from_slice(&u32::try_from(bytes).unwrap_or(u32::MAX).to_le_bytes());
        head.extend_from_slice(&1u32.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        let _ = stream.write_all(&head);
        held.push(stream);
    }
    for mut stream in held {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => println!("CLOSED"),
            Ok(_) => println!("ANSWERED"),
        }
    }
    Ok(())
}

fn hold(socket: &str, count: usize, uid: &str) -> Result<(), String> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = connect(socket)?;
        let answer = verdict(&exchange(&mut stream, &auth_line(uid)));
        if answer == "OK" {
            // Past the handshake: the connection now waits for calls, for as long as we like.
            let _ = stream.write_all(b"BEGIN\r\n");
        }
        println!("{answer}");
        held.push(stream);
    }
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Held until the test closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

fn logins(socket: &str, count: usize, prefix: &str) -> Result<(), String> {
    raise_descriptor_limit();
    zbus::block_on(async {
        let mut held = Vec::with_capacity(count);
        for n in 0..count {
            let address =
                zbus::Address::from(Transport::Unix(Unix::new(UnixSocket::File(socket.into()))));
            let connection = Builder::address(address)
                .p2p()
                .auth_mechanism(AuthMechanism::External)
                .method_timeout(Duration::from_secs(120))
                .build()
                .await
                .map_err(|e| format!("login {n}: connect: {e}"))?;
            let proxy = OtpdProxy::builder(&connection)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(|e| format!("login {n}: proxy: {e}"))?;
            let step = proxy
                .begin_login(&format!("{prefix}{n}"), "login", "", "")
                .await
                .map_err(|e| format!("login {n}: BeginLogin: {e}"))?;
            if step.kind != StepKind::Prompt as u32 {
                return Err(format!("login {n}: not asked for a code: {step:?}"));
            }
            held.push((connection, proxy, step.handle));
        }
        println!("prompted {}", held.len());
        let mut ended = 0;
        for (n, (connection, proxy, handle)) in held.into_iter().enumerate() {
            let step = proxy
                .answer(&handle, "000000")
                .await
                .map_err(|e| format!("login {n}: Answer: {e}"))?;
            if step.kind != StepKind::Prompt as u32 {
                ended += 1;
            }
            drop(proxy);
            let _ = connection.close().await;
        }
        println!("ended {ended}");
        Ok(())
    })
}

/// A call `pipeline` sends: a method of otpd's interface and the header's flags.
struct Call {
    member: &'static str,
    flags: u8,
}

/// `Cancel("x")`, wanting a reply.
const CANCEL: Call = Call {
    member: "Cancel",
    flags: 0,
};

/// A method otpd does not have, flagged NO_REPLY_EXPECTED: zbus answers it all the same.
const UNANSWERED: Call = Call {
    member: "Nope",
    flags: 1,
};

/// Sends `count` calls of `call` (with one string argument, "x") on one connection and reads
/// none of the replies: a peer that makes otpd answer faster than it reads.
fn pipeline(socket: &str, count: usize, call: &Call) -> Result<(), String> {
    let mut stream = connect(socket)?;
    if verdict(&exchange(&mut stream, &auth_line(&my_uid()))) != "OK" {
        return Err("the handshake was refused".into());
    }
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut sent = 0;
    if stream.write_all(b"BEGIN\r\n").is_ok() {
        let mut batch = Vec::new();
        // A hundred calls a write, so the calls arrive faster than otpd answers them.
        for serial in 1..=count {
            batch.extend_from_slice(&method_call(call, serial as u32));
            if serial.is_multiple_of(100) || serial == count {
                if stream.write_all(&batch).is_err() {
                    break;
                }
                sent = serial;
                batch.clear();
            }
        }
    }
    println!("sent {sent}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Held, replies unread, until the test closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// A little-endian method call of `call` with the argument "x" on otpd's object, as `serial`,
/// built by hand: no D-Bus library would send calls without reading replies.
fn method_call(call: &Call, serial: u32) -> Vec<u8> {
    fn pad(bytes: &mut Vec<u8>, to: usize) {
        while !bytes.len().is_multiple_of(to) {
            bytes.push(0);
        }
    }
    fn field(fields: &mut Vec<u8>, code: u8, signature: &[u8], value: &str) {
        pad(fields, 8);
        fields.push(code);
        fields.push(1);
        fields.extend_from_slice(signature);
        fields.push(0);
        if signature == b"g" {
            fields.push(value.len() as u8);
        } else {
            pad(fields, 4);
            fields.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    // The field array starts at offset 16, a multiple of 8, so padding within it is the same
    // as padding within the message.
    let mut fields = Vec::new();
    field(&mut fields, 1, b"o", kron_proto::OBJECT_PATH);
    field(&mut fields, 2, b"s", kron_proto::INTERFACE);
    field(&mut fields, 3, b"s", call.member);
    field(&mut fields, 8, b"g", "s");
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(b"x\0");
    let mut message = vec![b'l', 1, call.flags, 1];
    message.extend_from_slice(&(body.len() as u32).to_le_bytes());
    message.extend_from_slice(&serial.to_le_bytes());
    message.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    message.extend_from_slice(&fields);
    pad(&mut message, 8);
    message.extend_from_slice(&body);
    message
}

/// Each held login is a descriptor here too.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one valid, correctly sized struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn bus_flood(address: &str, count: usize, bytes: usize, calls: usize) -> Result<(), String> {
    let huge = "a".repeat(bytes);
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let (address, huge) = (address.to_owned(), huge.clone());
            std::thread::spawn(move || -> Result<Vec<String>, String> {
                zbus::block_on(async {
                    let connection = Builder::address(address.as_str())
                        .method_timeout(Duration::from_secs(120))
                        .build()
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    let mut answers = Vec::new();
                    for _ in 0..calls {
                        let reply = connection
                            .call_method(
                                Some(kron_proto::BUS_NAME),
                                kron_proto::OBJECT_PATH,
                                Some(kron_proto::INTERFACE),
                                "SetContact",
                                &("user", "email", huge.as_str()),
                            )
                            .await;
                        answers.push(match reply {
                            Ok(_) => "OK".to_owned(),
                            Err(error) => kron_tests::dbus::CallError::from(error).name,
                        });
                    }
                    Ok(answers)
                })
            })
        })
        .collect();
    for thread in threads {
        let answers = thread
            .join()
            .map_err(|_| "a flooding thread panicked".to_owned())??;
        for answer in answers {
            println!("{answer}");
        }
    }
    Ok(())
}
