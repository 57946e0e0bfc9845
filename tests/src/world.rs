//! One test's private world: a bus, otpd on it (and on its own socket), and a PAM stack
//! pointing at otpd: through its socket, as installed, or through the bus.

use crate::bus::Bus;
use crate::kronctl::Kronctl;
use crate::otpd::Otpd;
use crate::pam::{Login, PamConfig, Stack};

/// Bound on each exchange the module has with otpd in test stacks: generous, so a loaded CI
/// machine never turns a slow answer into a failed login.
pub const MODULE_TIMEOUT_SECS: u64 = 30;

/// The PAM service name of [`World::pam`].
pub const SERVICE: &str = "login";

/// How pam_kron reaches otpd in a test stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// otpd's own socket, peer-to-peer (`socket=`): the module's default.
    Socket,
    /// Through the bus daemon (`bus=`).
    Bus,
}

impl Transport {
    /// Both, for the tests that must hold whichever way a login comes in.
    pub const BOTH: [Transport; 2] = [Transport::Socket, Transport::Bus];
}

/// A bus, otpd with the given config, and a [`Stack::Probe`] stack for service `login`.
/// Fields drop in order: the stack, then otpd, then the bus it was on.
#[derive(Debug)]
pub struct World {
    pub pam: PamConfig,
    pub otpd: Otpd,
    pub bus: Bus,
    pub transport: Transport,
}

impl World {
    /// Starts everything, the module talking to otpd's socket; `config` is extra otpd.toml
    /// text (see [`Otpd::start`]).
    pub fn start(config: &str) -> World {
        World::start_over(Transport::Socket, config)
    }

    /// Starts everything, the module reaching otpd over `transport`.
    pub fn start_over(transport: Transport, config: &str) -> World {
        let bus = Bus::start();
        let otpd = Otpd::start(&bus, config);
        let pam = stack(&bus, &otpd, transport, SERVICE, Stack::Probe);
        World {
            pam,
            otpd,
            bus,
            transport,
        }
    }

    /// The module argument that names how pam_kron reaches otpd (`socket=...` or `bus=...`).
    pub fn transport_arg(&self) -> String {
        transport_arg(&self.bus, &self.otpd, self.transport)
    }

    /// A login of `user` through the probe stack.
    pub fn login(&self, user: &str) -> Login {
        self.pam.login(user)
    }

    /// kronctl as root on this world's bus.
    pub fn kronctl(&self) -> Kronctl {
        Kronctl::root(&self.bus)
    }

    /// Another stack reaching this world's otpd the same way (another service name or shape).
    pub fn stack(&self, service: &str, shape: Stack) -> PamConfig {
        stack(&self.bus, &self.otpd, self.transport, service, shape)
    }
}

/// `socket=` otpd's socket, or `bus=` its bus.
pub fn transport_arg(bus: &Bus, otpd: &Otpd, transport: Transport) -> String {
    match transport {
        Transport::Socket => format!("socket={}", otpd.socket_path().display()),
        Transport::Bus => format!("bus={}", bus.address()),
    }
}

/// A stack for `service` whose pam_kron line names how to reach otpd and the test timeout.
pub fn stack(
    bus: &Bus,
    otpd: &Otpd,
    transport: Transport,
    service: &str,
    shape: Stack,
) -> PamConfig {
    let reach = transport_arg(bus, otpd, transport);
    let timeout_arg = format!("timeout={MODULE_TIMEOUT_SECS}");
    PamConfig::with_module_args(service, shape, &[&reach, &timeout_arg])
}
