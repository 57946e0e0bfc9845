//! `dbus-call ADDRESS METHOD ARG...`: calls one method of otpd's interface with the
//! signature the method has, as whoever runs it (the tests run it as a test user with
//! `setpriv`), and prints the outcome: `OK` or `ERROR <name>` and the error's text on the
//! next line. Arguments too large for a command line are made here: `@N` is a string (or, for
//! a byte array, bytes) of N bytes of [`MARKER`] repeated, so a test can look for it in the
//! error. dbus-send cannot pass such arguments (one argument is at most 128 KiB).
//!
//! Exit status: 0 when otpd answered (success or error), 1 on a transport failure, 2 on
//! usage errors.

use kron_proto::{BUS_NAME, INTERFACE, OBJECT_PATH, TokenImport};
use std::time::Duration;

/// What `@N` arguments are made of.
const MARKER: &str = "ECHO-MARKER-";

fn arg(raw: &str) -> String {
    match raw.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
        Some(len) => MARKER.repeat(len / MARKER.len() + 1)[..len].to_owned(),
        None => raw.to_owned(),
    }
}

/// Calls `method` with `body` and drops the reply.
async fn send<B>(connection: &zbus::Connection, method: &str, body: &B) -> zbus::Result<()>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    connection
        .call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), method, body)
        .await
        .map(drop)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, method, rest @ ..] = args.as_slice() else {
        eprintln!("usage: dbus-call ADDRESS METHOD ARG...");
        std::process::exit(2);
    };
    let a: Vec<String> = rest.iter().map(|r| arg(r)).collect();
    let m = method.as_str();
    let outcome = zbus::block_on(async {
        let connection = zbus::connection::Builder::address(address.as_str())
            .method_timeout(Duration::from_secs(120))
            .build()
            .await?;
        let c = &connection;
        match (m, a.as_slice()) {
            ("List" | "FleetPush", []) => send(c, m, &()).await,
            ("Status" | "Reset" | "Unlock" | "SendEnrollmentCode" | "ExportToken", [x]) => {
                send(c, m, &(x,)).await
            }
            (
                "Answer" | "Enroll" | "Confirm" | "DeliverEnrollment" | "RecoveryCodes" | "Export",
                [x, y],
            ) => send(c, m, &(x, y)).await,
            ("SetContact", [x, y, z]) => send(c, m, &(x, y, z)).await,
            ("ListPage" | "FleetPushPage", [after, limit]) => {
                let Ok(limit) = limit.parse::<u32>() else {
                    eprintln!("dbus-call: {m}'s limit is a number");
                    std::process::exit(2);
                };
                send(c, m, &(after, limit)).await
            }
            ("BeginLogin", [w, x, y, z]) => send(c, m, &(w, x, y, z)).await,
            ("Import", [data, passphrase]) => {
                send(c, m, &(data.as_bytes(), passphrase, false, false)).await
            }
            ("ImportTokens", [x]) => {
                let token = TokenImport {
                    user: x.clone(),
                    secret: x.clone().into_bytes(),
                    algorithm: x.clone(),
                    digits: 6,
                    period: 30,
                    last_step: 0,
                    recovery_codes: vec![x.clone()],
                };
                send(c, m, &(vec![token], false, false)).await
            }
            _ => {
                eprintln!("dbus-call: {m} with {} arguments is not known", a.len());
                std::process::exit(2);
            }
        }
    });
    match outcome {
        Ok(()) => println!("OK"),
        Err(zbus::Error::MethodError(name, text, _)) => {
            println!("ERROR {name}\n{}", text.unwrap_or_default());
        }
        // Standard errors (InvalidArgs for a message over otpd's size bound) come as FDO.
        Err(zbus::Error::FDO(error)) => {
            use zbus::DBusError;
            println!(
                "ERROR {}\n{}",
                error.name(),
                error.description().unwrap_or_default()
            );
        }
        Err(other) => {
            eprintln!("dbus-call: {other}");
            std::process::exit(1);
        }
    }
}
