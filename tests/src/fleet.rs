//! A fleet for one test: a real PostgreSQL with TLS ([`Postgres`]), and hosts A, B, C, each an
//! otpd with its own bus, state directory and PAM stack, each reaching the database through its
//! own [`Proxy`] (so a test can cut one host off). Set up the way docs/fleet.md tells an admin:
//! `kronctl fleet init` on A as the owner, `kronctl fleet add-host` for every host, and the
//! printed `[fleet]` section in each host's otpd.toml.

use std::path::PathBuf;

use tempfile::TempDir;

use crate::bus::Bus;
use crate::kronctl::Kronctl;
use crate::otpd::Otpd;
use crate::pam::{Login, PamConfig, Stack};
use crate::postgres::{OWNER, Postgres};
use crate::proxy::Proxy;
use crate::scratch;
use crate::world::{self, Transport};

/// `offline_window` of the test fleets unless a test sets its own: ten minutes.
pub const TEST_OFFLINE_WINDOW: u64 = 600;

/// One host of the fleet. Fields drop in order: stack, otpd, its bus, its proxy.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub pam: PamConfig,
    pub otpd: Otpd,
    pub bus: Bus,
    pub proxy: Proxy,
}

impl Host {
    /// A login of `user` through this host's probe stack.
    pub fn login(&self, user: &str) -> Login {
        self.pam.login(user)
    }

    /// kronctl as root on this host's bus.
    pub fn kronctl(&self) -> Kronctl {
        Kronctl::root(&self.bus)
    }

    /// `kronctl --json fleet status` on this host.
    pub fn fleet_status(&self) -> serde_json::Value {
        self.kronctl().json(&["fleet", "status"])
    }

    /// Waits (up to two minutes) until this host's `fleet status` satisfies `ready`, and
    /// returns that status.
    pub fn wait_for_status(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        crate::process::wait_for(what, std::time::Duration::from_secs(120), || {
            let status = self.fleet_status();
            if ready(&status) {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            None
        })
    }
}

/// The database and the hosts; hosts stop before the database.
#[derive(Debug)]
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub db: Postgres,
    /// The hosts' password files (root, 0600).
    secrets: TempDir,
}

impl Fleet {
    /// The database and hosts a, b, c; `config` is extra otpd.toml text for every host
    /// (top-level keys and tables; the `[fleet]` section is appended after it). Offline packs
    /// cover 10 minutes ([`TEST_OFFLINE_WINDOW`]), so every host's first pack of a user costs
    /// the database 20 bcrypt hashes, not the default 8 hours' 960.
    pub fn start(config: &str) -> Fleet {
        Fleet::start_with(config, &format!("offline_window = {TEST_OFFLINE_WINDOW}\n"))
    }

    /// [`Fleet::start`] with `fleet_keys` added to every host's `[fleet]` section.
    pub fn start_with(config: &str, fleet_keys: &str) -> Fleet {
        let db = Postgres::start();
        let secrets = scratch::private_dir("kron-fleet.");
        let mut fleet = Fleet {
            hosts: Vec::new(),
            db,
            secrets,
        };
        for name in ["a", "b", "c"] {
            let host = fleet.add_host(name, config, fleet_keys);
            fleet.hosts.push(host);
        }
        fleet
    }

    /// Host `index` (0 = a, 1 = b, 2 = c).
    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    /// The owner's URL through `proxy_port`.
    pub fn owner_url(&self, proxy_port: u16) -> String {
        Postgres::url(OWNER, proxy_port)
    }

    /// `kronctl fleet init` as the owner, from `kronctl` (any host's).
    pub fn init(&self, kronctl: &Kronctl, proxy_port: u16) -> crate::process::Output {
        kronctl.run(&[
            "fleet",
            "init",
            "--url",
            &self.owner_url(proxy_port),
            "--ca-file",
            &self.db.ca.cert().display().to_string(),
            "--owner-password-file",
            &self.db.owner_password_file().display().to_string(),
            "--key-file",
            &self.db.key_file().display().to_string(),
        ])
    }

    /// The password file of host `name`.
    pub fn password_file(&self, name: &str) -> PathBuf {
        self.secrets.path().join(format!("{name}-password"))
    }

    /// Starts host `name` on a local store, then (the first host) inits the fleet, adds the
    /// host's role with `kronctl fleet add-host`, and restarts otpd with the printed section.
    fn add_host(&self, name: &str, config: &str, fleet_keys: &str) -> Host {
        let bus = Bus::start();
        let proxy = Proxy::start(self.db.port());
        let mut otpd = Otpd::start(&bus, config);
        let kronctl = Kronctl::root(&bus);
        if self.hosts.is_empty() {
            self.init(&kronctl, proxy.port())
                .assert_success("kronctl fleet init");
        }
        let section = self.add_host_section(&kronctl, name, proxy.port());
        let mut text = std::fs::read_to_string(otpd.config_path()).expect("read otpd.toml");
        text.push_str(&section);
        text.push_str(fleet_keys);
        std::fs::write(otpd.config_path(), text).expect("write otpd.toml");
        otpd.restart();
        let pam = world::stack(&bus, &otpd, Transport::Socket, world::SERVICE, Stack::Probe);
        Host {
            name: name.to_string(),
            pam,
            otpd,
            bus,
            proxy,
        }
    }

    /// `kronctl fleet add-host NAME`, returning the `[fleet]` section it printed.
    pub fn add_host_section(&self, kronctl: &Kronctl, name: &str, port: u16) -> String {
        let output = self.run_add_host(kronctl, name, port);
        output.assert_success("kronctl fleet add-host");
        let start = output
            .stdout
            .find("[fleet]")
            .unwrap_or_else(|| panic!("no [fleet] section printed:\n{}", output.stdout));
        output.stdout[start..].to_string()
    }

    /// `kronctl fleet add-host NAME` as the owner through `port`, its password file
    /// [`Fleet::password_file`], whatever it answers.
    pub fn run_add_host(&self, kronctl: &Kronctl, name: &str, port: u16) -> crate::process::Output {
        kronctl.run(&[
            "fleet",
            "add-host",
            name,
            "--url",
            &self.owner_url(port),
            "--ca-file",
            &self.db.ca.cert().display().to_string(),
            "--owner-password-file",
            &self.db.owner_password_file().display().to_string(),
            "--password-file",
            &self.password_file(name).display().to_string(),
        ])
    }

    /// The first line of host `name`'s password file.
    pub fn password_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.password_file(name))
            .expect("read the host's password file")
            .trim()
            .to_string()
    }

    /// Runs `sql` as host `name`'s role (over TLS, with its password), which must succeed;
    /// its unaligned output, trimmed.
    pub fn sql_as_host(&self, name: &str, sql: &str) -> String {
        let output = self
            .db
            .psql_as(&format!("kron_{name}"), &self.password_of(name), sql);
        output.assert_success(sql);
        output.stdout.trim().to_string()
    }
}
