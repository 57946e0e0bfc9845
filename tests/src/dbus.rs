//! Raw D-Bus calls to otpd: any method, any body, errors reported by their D-Bus name.
//!
//! The tests use these to probe otpd with calls no well-behaved client would make (wrong
//! signatures, oversize strings) and to wait for otpd to own its name.

use kron_proto::{BUS_NAME, INTERFACE, OBJECT_PATH, Step, UserStatus};
use serde::de::DeserializeOwned;
use zbus::message::Message;

/// A D-Bus error reply (or a transport failure, named `transport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The D-Bus error name, e.g. `io.kron.Otpd1.Error.AccessDenied`.
    pub name: String,
    /// The human text that came with it.
    pub text: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.text)
    }
}

impl From<zbus::Error> for CallError {
    fn from(err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, text, _) => CallError {
                name: name.to_string(),
                text: text.unwrap_or_default(),
            },
            zbus::Error::FDO(fdo) => {
                use zbus::DBusError as _;
                CallError {
                    name: fdo.name().to_string(),
                    text: fdo.description().unwrap_or_default().to_string(),
                }
            }
            other => CallError {
                name: "transport".into(),
                text: other.to_string(),
            },
        }
    }
}

/// The error name otpd uses for `variant` (e.g. `"AccessDenied"`).
pub fn otpd_error(variant: &str) -> String {
    format!("{INTERFACE}.Error.{variant}")
}

/// Calls `member` of otpd's interface with `body` and returns the reply.
pub fn call<B>(conn: &zbus::Connection, member: &str, body: &B) -> Result<Message, CallError>
where
    B: serde::Serialize + zbus::DynamicType,
{
    call_interface(conn, INTERFACE, member, body)
}

/// Imports a token for each of `users` (root's `ImportTokens`: users with tokens need no
/// accounts), each with a secret of its own.
pub fn import_tokens(conn: &zbus::Connection, users: &[String]) {
    let tokens: Vec<kron_proto::TokenImport> = users
        .iter()
        .enumerate()
        .map(|(i, user)| kron_proto::TokenImport {
            user: user.clone(),
            secret: (i as u64).to_be_bytes().repeat(2),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            last_step: 0,
            recovery_codes: Vec::new(),
        })
        .collect();
    call(conn, "ImportTokens", &(tokens, false, false)).expect("ImportTokens");
}

/// Calls `interface.member` on otpd's object with `body` and returns the reply.
pub fn call_interface<B>(
    conn: &zbus::Connection,
    interface: &str,
    member: &str,
    body: &B,
) -> Result<Message, CallError>
where
    B: serde::Serialize + zbus::DynamicType,
{
    zbus::block_on(conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(interface), member, body))
        .map_err(CallError::from)
}

/// Decodes a reply body, panicking with the signature on a mismatch.
pub fn decode<T: DeserializeOwned + zbus::Type>(reply: &Message) -> T {
    reply
        .body()
        .deserialize::<T>()
        .unwrap_or_else(|err| panic!("unexpected reply {:?}: {err}", reply.body().signature()))
}

/// `BeginLogin(user, service, rhost, tty)`.
pub fn begin_login(conn: &zbus::Connection, user: &str, service: &str) -> Result<Step, CallError> {
    call(conn, "BeginLogin", &(user, service, "", "")).map(|reply| decode(&reply))
}

/// `Answer(handle, response)`.
pub fn answer(conn: &zbus::Connection, handle: &str, response: &str) -> Result<Step, CallError> {
    call(conn, "Answer", &(handle, response)).map(|reply| decode(&reply))
}

/// `Status(user)`.
pub fn status(conn: &zbus::Connection, user: &str) -> Result<UserStatus, CallError> {
    call(conn, "Status", &(user,)).map(|reply| decode(&reply))
}

/// The `Version` property, read with `org.freedesktop.DBus.Properties.Get`.
pub fn version(conn: &zbus::Connection) -> Result<String, CallError> {
    let reply = call_interface(
        conn,
        "org.freedesktop.DBus.Properties",
        "Get",
        &(INTERFACE, "Version"),
    )?;
    let value: zbus::OwnedVariant = decode(&reply);
    String::try_from(value).map_err(|err| CallError {
        name: "decode".into(),
        text: err.to_string(),
    })
}

/// Whether any connection owns `name` on the bus.
pub fn name_has_owner(conn: &zbus::Connection, name: &str) -> bool {
    let reply = zbus::block_on(conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "NameHasOwner",
        &(name,),
    ))
    .expect("NameHasOwner");
    decode(&reply)
}

/// Where a raw call goes: to otpd on a bus, or peer-to-peer on otpd's own socket.
#[derive(Debug, Clone)]
pub enum Route {
    /// A bus address, e.g. `unix:path=/tmp/kron-bus.x/bus`.
    Bus(String),
    /// otpd's socket.
    Socket(std::path::PathBuf),
}

impl Route {
    /// Both ways to `world`'s otpd, for tests that must hold whichever way a call comes in.
    pub fn both(world: &crate::World) -> [Route; 2] {
        [
            Route::Socket(world.otpd.socket_path()),
            Route::Bus(world.bus.address().to_string()),
        ]
    }
}

/// Calls `member` of otpd's interface with `dbus-send` as `identity` (for calls from another
/// uid than the test's). `args` are dbus-send typed arguments such as `string:alice`. A D-Bus
/// error shows in stderr as `Error <name>: <text>`.
pub fn send_as(
    identity: &crate::process::Identity,
    route: &Route,
    member: &str,
    args: &[&str],
) -> crate::process::Output {
    let mut command = identity.command("dbus-send");
    match route {
        Route::Bus(address) => command.arg(format!("--bus={address}")),
        Route::Socket(path) => command.arg(format!("--peer=unix:path={}", path.display())),
    };
    command
        .arg("--print-reply")
        .arg(format!("--dest={BUS_NAME}"))
        .arg(OBJECT_PATH)
        .arg(format!("{INTERFACE}.{member}"))
        .args(args);
    crate::process::run(&mut command)
}

/// Calls `member` of otpd's interface with `dbus-call` as `identity`: arguments of any size
/// (`@N` is N bytes of `ECHO-MARKER-`, see the program). `Ok(())` on success, else the D-Bus
/// error. Panics on a transport failure.
pub fn call_as(
    identity: &crate::process::Identity,
    address: &str,
    member: &str,
    args: &[&str],
) -> Result<(), CallError> {
    let mut command = identity.command(crate::artifacts::dbus_call());
    command.arg(address).arg(member).args(args);
    let output = crate::process::run(&mut command);
    output.assert_success(&format!("dbus-call {member}"));
    let mut lines = output.stdout.splitn(2, '\n');
    match lines.next().unwrap_or_default() {
        "OK" => Ok(()),
        first => Err(CallError {
            name: first.strip_prefix("ERROR ").unwrap_or(first).to_owned(),
            text: lines.next().unwrap_or_default().trim_end().to_owned(),
        }),
    }
}
