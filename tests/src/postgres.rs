//! A real PostgreSQL (15 or later, Debian's `postgresql` package) for one test: `initdb` and
//! `pg_ctl` as the `postgres` system user in a temporary directory, TLS with a certificate from
//! a CA the test makes with the openssl CLI, listening on 127.0.0.1 only, and set up the way
//! docs/fleet.md tells an admin to: an owner role that may create roles and read the seed key
//! file, a `kron` database it owns, and the key file itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{self, Output};
use crate::scratch;

/// The owner's password (tests only).
pub const OWNER_PASSWORD: &str = "owner-test-password";
/// The owner role.
pub const OWNER: &str = "kron_owner";

/// A certificate authority made by the test.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// A new CA (EC P-256) in a root-private directory.
    pub fn new(name: &str) -> TestCa {
        let dir = scratch::private_dir("kron-ca.");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
            ],
            &format!("/CN={name}"),
        );
        scratch::set_mode(&dir.path().join("ca.pem"), 0o644);
        TestCa { dir }
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Signs a server certificate for `names` (`IP:127.0.0.1`, `DNS:db.kron.test`) into
    /// `dir/server.pem` and `dir/server.key`.
    pub fn issue_server(&self, dir: &Path, names: &str) {
        let key = dir.join("server.key");
        let csr = dir.join("server.csr");
        let cert = dir.join("server.pem");
        let ext = dir.join("server.ext");
        scratch::write_file(&ext, &format!("subjectAltName={names}\n"), 0o644);
        run_openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key.display().to_string(),
            "-out",
            &csr.display().to_string(),
            "-subj",
            "/CN=kron test database",
        ]);
        run_openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.display().to_string(),
            "-CA",
            &self.cert().display().to_string(),
            "-CAkey",
            &self.dir.path().join("ca.key").display().to_string(),
            "-CAcreateserial",
            "-out",
            &cert.display().to_string(),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ]);
    }
}

fn openssl(dir: &Path, args: &[&str], last: &str) {
    let output = process::run(
        Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .arg(last),
    );
    output.assert_success("openssl");
}

fn run_openssl(args: &[&str]) {
    process::run(Command::new("openssl").args(args)).assert_success("openssl");
}

/// A running PostgreSQL cluster. Stopped (immediately) and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// The CA that signed the server certificate.
    pub ca: TestCa,
    /// Root-private files of the test: the owner's password file.
    secrets: TempDir,
}

impl Postgres {
    /// Makes, configures and starts a cluster; creates the owner, the `kron` database and the
    /// seed key file.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("kron-pg.")
            .tempdir()
            .expect("temporary directory");
        let (uid, gid) = postgres_ids();
        chown(dir.path(), uid, gid);
        scratch::set_mode(dir.path(), 0o700);
        let ca = TestCa::new("kron test CA");
        ca.issue_server(dir.path(), "IP:127.0.0.1,DNS:db.kron.test");
        for file in ["server.pem", "server.key"] {
            chown(&dir.path().join(file), uid, gid);
        }
        scratch::set_mode(&dir.path().join("server.key"), 0o600);
        let data = dir.path().join("data");
        as_postgres(Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]))
        .assert_success("initdb");
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.pem'\nssl_key_file = '{dir}/server.key'\n\
             max_connections = 100\nshared_buffers = 32MB\ntrack_functions = 'pl'\n",
            dir = dir.path().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // The superuser only on the socket (the test's own checks); everyone else over TLS
        // with a password; nothing in plain text.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nhostssl kron all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let secrets = scratch::private_dir("kron-pg-secrets.");
        let mut postgres = Postgres {
            dir,
            bin,
            port: 0,
            ca,
            secrets,
        };
        postgres.start_on_a_free_port();
        let key = postgres.key_file();
        let hex: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        std::fs::write(&key, format!("{hex}\n")).expect("write key file");
        chown(&key, uid, gid);
        scratch::set_mode(&key, 0o600);
        postgres.sql(
            "postgres",
            &format!("CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'"),
        );
        postgres.sql(
            "postgres",
            &format!("GRANT pg_read_server_files TO {OWNER}"),
        );
        postgres.sql("postgres", &format!("CREATE DATABASE kron OWNER {OWNER}"));
        postgres.sql(
            "kron",
            &format!("GRANT EXECUTE ON FUNCTION pg_read_file(text) TO {OWNER}"),
        );
        scratch::write_file(
            &postgres.owner_password_file(),
            &format!("{OWNER_PASSWORD}\n"),
            0o600,
        );
        postgres
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's certificate and key, owned by the `postgres` user (for a pooler in front
    /// of the server that presents the same name).
    pub fn tls_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        )
    }

    /// The seed key file on the "database server".
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("kron-seed.key")
    }

    /// The owner's password file (root, 0600).
    pub fn owner_password_file(&self) -> PathBuf {
        self.secrets.path().join("owner-password")
    }

    /// A URL for `role` at 127.0.0.1:`port` (a proxy's, or the server's own).
    pub fn url(role: &str, port: u16) -> String {
        format!("postgresql://{role}@127.0.0.1:{port}/kron?sslmode=verify-full")
    }

    /// Runs `sql` as the superuser on the unix socket and returns its unaligned output.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let output = self.psql_superuser(database, sql);
        output.assert_success(&format!("psql {sql}"));
        output.stdout.trim().to_string()
    }

    /// [`Postgres::sql`] that may fail.
    pub fn psql_superuser(&self, database: &str, sql: &str) -> Output {
        as_postgres(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", "-d", database, "-c", sql]),
        )
    }

    /// A psql session as the superuser that runs what the test writes to it, for as long as
    /// the test holds it (an admin's open transaction). Ends when dropped.
    pub fn session(&self, database: &str) -> Session {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let (uid, gid) = postgres_ids();
        let child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database])
            .uid(uid)
            .gid(gid)
            .env("HOME", "/tmp")
            .current_dir("/tmp")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start psql");
        Session { child }
    }

    /// Runs `sql` as `role` over TLS (verify-full against the test CA) with `password`.
    pub fn psql_as(&self, role: &str, password: &str, sql: &str) -> Output {
        process::run(
            Command::new(self.bin.join("psql"))
                .env("PGPASSWORD", password)
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", self.ca.cert())
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-p",
                ])
                .arg(self.port.to_string())
                .args(["-U", role, "-d", "kron", "-c", sql]),
        )
    }

    /// `pg_dump kron` as the superuser.
    pub fn dump(&self) -> String {
        let output = as_postgres(
            Command::new(self.bin.join("pg_dump"))
                .arg("-h")
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", "kron"]),
        );
        output.assert_success("pg_dump");
        output.stdout
    }

    /// Kills the whole server with SIGKILL (postmaster and every backend), as a crash would.
    pub fn kill(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let mut victims = children_of(pid);
        victims.push(pid);
        for victim in victims {
            process::send_signal(victim, libc::SIGKILL);
        }
        process::wait_for(
            "the killed server to be gone",
            Duration::from_secs(30),
            || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
        );
        // A backend forked after the list above outlives its postmaster until its statement
        // ends (a pack's bcrypt loop checks for a dead postmaster only then) and keeps the
        // shared memory in use, so a restart would refuse to start: every process working in
        // the data directory (a backend's cwd) goes too.
        let data = self.dir.path().join("data");
        let data = std::fs::canonicalize(&data).unwrap_or(data);
        process::wait_for(
            "the killed server's backends to be gone",
            Duration::from_secs(30),
            || {
                let left = working_in(&data);
                for pid in &left {
                    process::send_signal(*pid, libc::SIGKILL);
                }
                left.is_empty().then_some(())
            },
        );
    }

    /// Starts the server again (crash recovery runs) and waits until it answers.
    pub fn start_server(&self) {
        self.assert_started(&self.pg_ctl_start());
    }

    /// The first start: on a port free a moment ago, and on another one if some other process
    /// took it before the server bound it.
    fn start_on_a_free_port(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port();
            // The last setting in postgresql.conf wins.
            append(
                &self.dir.path().join("data/postgresql.conf"),
                &format!("port = {}\n", self.port),
            );
            let log_before = self.log().len();
            let output = self.pg_ctl_start();
            let log = self.log();
            let taken =
                !output.success() && log[log_before.min(log.len())..].contains("could not bind");
            if !taken || attempt == ATTEMPTS {
                return self.assert_started(&output);
            }
        }
    }

    /// Panics with the server's log unless `output`, of `pg_ctl start`, is a success.
    fn assert_started(&self, output: &Output) {
        assert!(
            output.success(),
            "pg_ctl start failed: {}\n--- server log ---\n{}",
            output.describe(),
            self.log()
        );
    }

    fn pg_ctl_start(&self) -> Output {
        as_postgres(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "120", "start"]),
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some() {
            let _ = as_postgres(
                Command::new(self.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(self.dir.path().join("data"))
                    .args(["-m", "immediate", "-w", "stop"]),
            );
        }
    }
}

/// A psql session started by [`Postgres::session`].
#[derive(Debug)]
pub struct Session {
    child: std::process::Child,
}

impl Session {
    /// Sends `sql` (one or more statements) to the session, without waiting for it to run.
    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("psql's stdin");
        writeln!(stdin, "{sql}").expect("write to psql");
        stdin.flush().expect("flush psql's stdin");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // End of input ends psql; an open transaction is rolled back with the connection.
        drop(self.child.stdin.take());
        if process::wait_bounded(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command as the `postgres` system user (initdb and the server refuse root).
pub(crate) fn as_postgres(command: &mut Command) -> Output {
    let (uid, gid) = postgres_ids();
    use std::os::unix::process::CommandExt;
    command
        .uid(uid)
        .gid(gid)
        .env("HOME", "/tmp")
        .current_dir("/tmp");
    process::run(command)
}

pub(crate) fn postgres_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("the postgres system user exists (Debian package postgresql)");
    (user.uid.as_raw(), user.gid.as_raw())
}

pub(crate) fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// The newest PostgreSQL's bin directory (15 or later).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package postgresql)")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&v| v >= 15)
        .collect();
    versions.sort_unstable();
    let version = versions.last().expect("PostgreSQL 15 or later");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

/// The processes whose working directory is `dir`.
fn working_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
