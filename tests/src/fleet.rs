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
    /// (top-level keys and tables; the `[fleet]` section is appended after it).
    pub fn start(config: &str) -> Fleet {
        let db = Postgres::start();
        let secrets = scratch::private_dir("kron-fleet.");
        let mut fleet = Fleet {
            hosts: Vec::new(),
            db,
            secrets,
        };
        for name in ["a", "b", "c"] {
            let host = fleet.add_host(name, config);
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
    fn add_host(&self, name: &str, config: &str) -> Host {
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
        let output = kronctl.run(&[
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
        ]);
        output.assert_success("kronctl fleet add-host");
        let start = output
            .stdout
            .find("[fleet]")
            .unwrap_or_else(|| panic!("no [fleet] section printed:\n{}", output.stdout));
        output.stdout[start..].to_string()
    }

    /// The first line of host `name`'s password file.
    pub fn password_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.password_file(name))
            .expect("read the host's password file")
            .trim()
            .to_string()
    }
}
