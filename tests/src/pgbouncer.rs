//! A real PgBouncer (Debian's `pgbouncer` package) in transaction mode in front of a test's
//! PostgreSQL, set up as docs/fleet.md ("Scale") tells an admin: TLS to the hosts with the
//! server's own certificate, TLS on to PostgreSQL, SCRAM both ways. It runs as the `postgres`
//! system user (PgBouncer refuses root) from a temporary directory, and is killed on drop.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;
use crate::postgres::{Postgres, chown, postgres_ids};
use crate::process::{self, Spawned};

/// Fields drop in order: the process, then its directory.
#[derive(Debug)]
pub struct PgBouncer {
    process: Spawned,
    dir: TempDir,
    port: u16,
}

impl PgBouncer {
    /// PgBouncer for the `kron` database of `db`, letting in `users` (role, password);
    /// `settings` are more lines of its `[pgbouncer]` section (they override the ones here).
    pub fn start(db: &Postgres, users: &[(&str, &str)], settings: &str) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("kron-pgbouncer.")
            .tempdir()
            .expect("temporary directory");
        let (uid, gid) = postgres_ids();
        let port = free_port();
        let (cert, key) = db.tls_files();
        let userlist: String = users
            .iter()
            .map(|(role, password)| format!("\"{role}\" \"{password}\"\n"))
            .collect();
        let config = format!(
            "[databases]\nkron = host=127.0.0.1 port={db_port} dbname=kron\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 100\n\
             client_tls_sslmode = require\nclient_tls_cert_file = {cert}\n\
             client_tls_key_file = {key}\nserver_tls_sslmode = require\n\
             logfile = {dir}/pgbouncer.log\n{settings}",
            db_port = db.port(),
            dir = dir.path().display(),
            cert = cert.display(),
            key = key.display(),
        );
        for (name, text) in [("pgbouncer.ini", config), ("userlist.txt", userlist)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PgBouncer's files");
            chown(&path, uid, gid);
        }
        chown(dir.path(), uid, gid);
        let process = process::spawn(
            Command::new("/usr/sbin/pgbouncer")
                .arg(dir.path().join("pgbouncer.ini"))
                .uid(uid)
                .gid(gid)
                .current_dir("/tmp"),
        );
        let mut bouncer = PgBouncer { process, dir, port };
        process::wait_for("PgBouncer listening", Duration::from_secs(30), || {
            assert!(
                !bouncer.process.has_exited(),
                "pgbouncer exited:\n{}",
                bouncer.log()
            );
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        bouncer
    }

    /// Where hosts connect, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}
