//! An impostor otpd that accepts every login, for tests proving the module never talks to a
//! bus it was not configured with. It counts the calls it receives. It also stands for an otpd
//! older than this kronctl: it lists users with `List` only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kron_proto::{BUS_NAME, Message, OBJECT_PATH, Step, StepKind, UserStatus};

use crate::bus::Bus;

/// The impostor's calls counter, shared with the serving connection.
#[derive(Debug, Default)]
struct Calls(AtomicUsize);

struct AcceptAll {
    calls: Arc<Calls>,
}

#[zbus::interface(name = "io.kron.Otpd1")]
impl AcceptAll {
    fn begin_login(&self, _user: &str, _service: &str, _rhost: &str, _tty: &str) -> Step {
        self.calls.0.fetch_add(1, Ordering::SeqCst);
        Step::terminal(StepKind::Accept, vec![Message::info("fake otpd says yes")])
    }

    fn answer(&self, _handle: &str, _response: &str) -> Step {
        self.calls.0.fetch_add(1, Ordering::SeqCst);
        Step::terminal(StepKind::Accept, vec![Message::info("fake otpd says yes")])
    }

    /// An otpd older than `ListPage` answers `List` only.
    fn list(&self) -> Vec<UserStatus> {
        vec![UserStatus {
            user: FAKE_LISTED_USER.into(),
            enrolled: true,
            pending: false,
            locked: false,
            locked_until: 0,
            failures: 0,
            last_used: 0,
            recovery_codes: 0,
            email: String::new(),
            phone: String::new(),
        }]
    }

    #[zbus(property)]
    fn version(&self) -> String {
        "fake".into()
    }
}

/// The one user the impostor lists.
pub const FAKE_LISTED_USER: &str = "listed-by-an-older-otpd";

/// A running impostor; stops serving on drop.
pub struct FakeOtpd {
    _connection: zbus::Connection,
    calls: Arc<Calls>,
}

impl std::fmt::Debug for FakeOtpd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOtpd")
            .field("calls", &self.calls())
            .finish()
    }
}

impl FakeOtpd {
    /// Owns `io.kron.Otpd` on `bus` (the test runs as root, whom the policy lets own it).
    pub fn start(bus: &Bus) -> FakeOtpd {
        let calls = Arc::new(Calls::default());
        let server = AcceptAll {
            calls: Arc::clone(&calls),
        };
        let connection = zbus::block_on(async {
            zbus::connection::Builder::address(bus.address())
                .name(BUS_NAME)
                .serve_at(OBJECT_PATH, server)
                .build()
                .await
        })
        .expect("fake otpd owns io.kron.Otpd");
        FakeOtpd {
            _connection: connection,
            calls,
        }
    }

    /// How many login calls reached the impostor.
    pub fn calls(&self) -> usize {
        self.calls.0.load(Ordering::SeqCst)
    }
}
