//! kron-web under test: a test CA and a certificate for `localhost` (rcgen), and the real
//! kron-web binary serving HTTPS with it on a free loopback port, as a test user whom the
//! bus's policy lets call the link methods, exactly as the shipped policy lets `kron-web`.

use std::fs::OpenOptions;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{self, Identity};
use crate::{artifacts, scratch};

/// How long kron-web may take to listen.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A CA made for one test, and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct TestCa {
    dir: TempDir,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl TestCa {
    /// Makes the CA and the server's certificate and key; the key belongs to root and the
    /// group `gid` with mode 0640, as docs/delivery.md says to install it.
    pub fn new(gid: u32) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = scratch::public_dir("kron-ca.");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "kron test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("an address")));
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = server.signed_by(&key, &issuer).expect("server certificate");
        scratch::write_file(&dir.path().join("ca.pem"), &ca_cert.pem(), 0o644);
        scratch::write_file(&dir.path().join("web.crt"), &cert.pem(), 0o644);
        let key_path = dir.path().join("web.key");
        scratch::write_file(&key_path, &key.serialize_pem(), 0o640);
        chown(&key_path, Some(0), Some(gid)).expect("chown the key");
        TestCa { dir }
    }

    /// The CA certificate browsers are told to trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("web.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("web.key")
    }
}

/// The `[web]` section for kron-web on `port` with `ca`'s certificate.
pub fn web_section(port: u16, ca: &TestCa, extra: &str) -> String {
    format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://localhost:{port}\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n",
        ca.cert().display(),
        ca.key().display()
    )
}

/// The shipped D-Bus policy with `user` in the place of the `kron-web` user, in `dir`.
pub fn policy_for(user: &str, dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(artifacts::dbus_policy()).expect("read the policy");
    assert!(
        shipped.contains("user=\"kron-web\""),
        "the policy names kron-web"
    );
    let path = dir.join("io.kron.Otpd.conf");
    scratch::write_file(
        &path,
        &shipped.replace("user=\"kron-web\"", &format!("user=\"{user}\"")),
        0o644,
    );
    path
}

/// Runs kron-web as `identity` with a config holding `web_section`, owned by `config_uid`,
/// expecting it to refuse to start; what it wrote to stderr. It gets no bus: files are checked
/// before the bus is used. Kills it and panics if it is still running after [`START_LIMIT`].
pub fn refused(web_section: &str, identity: &Identity, config_uid: u32) -> String {
    let dir = scratch::public_dir("kron-web.");
    let config = dir.path().join("otpd.toml");
    scratch::write_file(&config, web_section, 0o644);
    chown(&config, Some(config_uid), None).expect("chown the config");
    let mut child = identity
        .command(artifacts::bin_dir().join("kron-web"))
        .arg("--config")
        .arg(&config)
        .arg("--bus")
        .arg("unix:path=/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kron-web");
    let deadline = std::time::Instant::now() + START_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kron-web") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kron-web started, where it should have refused its files");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut child.stderr.take().expect("kron-web's stderr"),
        &mut stderr,
    )
    .expect("read kron-web's stderr");
    assert!(!status.success(), "kron-web exited 0: {stderr}");
    stderr
}

/// A running kron-web. Killed on drop.
pub struct KronWeb {
    dir: TempDir,
    bus: String,
    identity: Identity,
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for KronWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KronWeb").field("port", &self.port).finish()
    }
}

impl KronWeb {
    /// Starts kron-web as `identity` with a config holding `web_section`, on `bus`.
    pub fn start(web_section: &str, port: u16, bus: &str, identity: Identity) -> KronWeb {
        let dir = scratch::public_dir("kron-web.");
        scratch::write_file(&dir.path().join("otpd.toml"), web_section, 0o644);
        let mut web = KronWeb {
            dir,
            bus: bus.to_owned(),
            identity,
            port,
            child: None,
        };
        web.launch();
        web
    }

    /// `https://localhost:PORT`.
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("kron-web is running").id()
    }

    /// Everything kron-web wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kron-web.log")).unwrap_or_default()
    }

    /// SIGKILL, reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`KronWeb::kill`], on the same port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "kron-web is running");
        self.launch();
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kron-web.log"))
            .expect("open the log");
        let child = self
            .identity
            .command(artifacts::bin_dir().join("kron-web"))
            .arg("--config")
            .arg(self.dir.path().join("otpd.toml"))
            .arg("--bus")
            .arg(&self.bus)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .expect("start kron-web");
        self.child = Some(child);
        let port = self.port;
        let log = self.dir.path().join("kron-web.log");
        let child = self.child.as_mut().expect("just started");
        process::wait_for("kron-web to listen", START_LIMIT, || {
            if matches!(child.try_wait(), Ok(Some(_))) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("kron-web exited during start-up:\n{log}");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
}

impl Drop for KronWeb {
    fn drop(&mut self) {
        self.kill();
    }
}
