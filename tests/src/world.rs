//! One test's private world: a bus, otpd on it, and a PAM stack pointing at both.

use crate::bus::Bus;
use crate::kronctl::Kronctl;
use crate::otpd::Otpd;
use crate::pam::{Login, PamConfig, Stack};

/// Bound on each exchange the module has with otpd in test stacks: generous, so a loaded CI
/// machine never turns a slow answer into a failed login.
pub const MODULE_TIMEOUT_SECS: u64 = 30;

/// The PAM service name of [`World::pam`].
pub const SERVICE: &str = "login";

/// A bus, otpd with the given config, and a [`Stack::Probe`] stack for service `login`.
/// Fields drop in order: the stack, then otpd, then the bus it was on.
#[derive(Debug)]
pub struct World {
    pub pam: PamConfig,
    pub otpd: Otpd,
    pub bus: Bus,
}

impl World {
    /// Starts everything; `config` is extra otpd.toml text (see [`Otpd::start`]).
    pub fn start(config: &str) -> World {
        let bus = Bus::start();
        let otpd = Otpd::start(&bus, config);
        let pam = stack(&bus, SERVICE, Stack::Probe);
        World { pam, otpd, bus }
    }

    /// A login of `user` through the probe stack.
    pub fn login(&self, user: &str) -> Login {
        self.pam.login(user)
    }

    /// kronctl as root on this world's bus.
    pub fn kronctl(&self) -> Kronctl {
        Kronctl::root(&self.bus)
    }

    /// Another stack on this world's bus (another service name or shape).
    pub fn stack(&self, service: &str, shape: Stack) -> PamConfig {
        stack(&self.bus, service, shape)
    }
}

/// A stack for `service` whose pam_kron line names `bus` and the test timeout.
pub fn stack(bus: &Bus, service: &str, shape: Stack) -> PamConfig {
    let bus_arg = format!("bus={}", bus.address());
    let timeout_arg = format!("timeout={MODULE_TIMEOUT_SECS}");
    PamConfig::with_module_args(service, shape, &[&bus_arg, &timeout_arg])
}
