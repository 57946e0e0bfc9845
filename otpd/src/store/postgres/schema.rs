//! The fleet's schema in versioned migrations (`sql/NNN_*.sql`, compiled in), and the two
//! owner operations: `kronctl fleet init` (apply what is missing, in one transaction, under an
//! advisory lock so two admins cannot race) and `kronctl fleet add-host` (a host's role and its
//! password). Both run with the owner's credentials given for that call only; otpd stores none.

use super::target::{Committing, Password, Target, owner_call};
use super::tls;
use crate::error::{Error, Result, describe};
use std::path::Path;
use tokio::runtime::Handle;

/// Every migration, in order: (version, file, SQL).
pub const MIGRATIONS: [(i32, &str, &str); 15] = [
    (1, "001_schema.sql", include_str!("sql/001_schema.sql")),
    (
        2,
        "002_functions.sql",
        include_str!("sql/002_functions.sql"),
    ),
    (3, "003_offline.sql", include_str!("sql/003_offline.sql")),
    (
        4,
        "004_login_path.sql",
        include_str!("sql/004_login_path.sql"),
    ),
    (5, "005_batches.sql", include_str!("sql/005_batches.sql")),
    (
        6,
        "006_cheaper_checks.sql",
        include_str!("sql/006_cheaper_checks.sql"),
    ),
    (
        7,
        "007_host_roles.sql",
        include_str!("sql/007_host_roles.sql"),
    ),
    (
        8,
        "008_pack_work.sql",
        include_str!("sql/008_pack_work.sql"),
    ),
    (
        9,
        "009_replay_clock.sql",
        include_str!("sql/009_replay_clock.sql"),
    ),
    (
        10,
        "010_throttle_clock.sql",
        include_str!("sql/010_throttle_clock.sql"),
    ),
    (
        11,
        "011_pack_lock.sql",
        include_str!("sql/011_pack_lock.sql"),
    ),
    (12, "012_pacing.sql", include_str!("sql/012_pacing.sql")),
    (
        13,
        "013_list_pages.sql",
        include_str!("sql/013_list_pages.sql"),
    ),
    (
        14,
        "014_host_secrets.sql",
        include_str!("sql/014_host_secrets.sql"),
    ),
    (
        15,
        "015_lock_wait.sql",
        include_str!("sql/015_lock_wait.sql"),
    ),
];

/// The schema version this otpd needs.
pub const CURRENT: i32 = 15;

/// Serialises concurrent `fleet init` runs (an arbitrary constant: "kron" in ASCII).
const INIT_LOCK: i64 = 0x6b72_6f6e;
/// Longest wait of `fleet init` for a lock on a table it changes (see [`init`]); the hosts'
/// statements wait for it meanwhile, up to their own lock timeout (5 s).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Owner credentials for one call: the URL names the owner role. kronctl reads the owner's
/// files as root and hands over what they hold: otpd's sandbox can neither read root's home
/// nor write /etc.
pub struct Owner<'a> {
    pub url: &'a str,
    /// The CA file a host's `[fleet]` section names.
    pub ca_file: &'a Path,
    /// What kronctl read from `ca_file`; `None`: otpd reads it (this host's own).
    pub ca_pem: Option<&'a [u8]>,
    pub password: Option<&'a str>,
}

impl Owner<'_> {
    pub(super) fn target(&self) -> Result<Target> {
        let ca = match self.ca_pem {
            Some(pem) => tls::Ca::Pem(pem),
            None => tls::Ca::File(self.ca_file),
        };
        let password = self
            .password
            .map(|p| Password::Given(zeroize::Zeroizing::new(p.to_owned())));
        Target::with(self.url, ca, password, None)
    }
}

fn failed(what: &str, e: &tokio_postgres::Error) -> Error {
    Error::InvalidArgument(format!("{what}: {}", describe(e)))
}

/// Creates or upgrades the schema; sets the key file if given, and proves the database can read
/// it. Returns what was done, one line each.
pub fn init(runtime: &Handle, owner: &Owner<'_>, key_file: Option<&str>) -> Result<Vec<String>> {
    let target = owner.target()?;
    let committing = Committing::default();
    runtime.block_on(owner_call("fleet init", &committing, async {
        let mut client = target
            .connect()
            .await
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut tx = client
            .transaction()
            .await
            .map_err(|e| failed("beginning", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK])
            .await
            .map_err(|e| failed("locking", &e))?;
        // A migration that alters a table waits for every open transaction on it, and while it
        // waits, every host's statement on that table queues behind it: logins fleet-wide would
        // fail at the hosts' own lock timeout. Better to give up quickly and be run again.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}s'",
            LOCK_WAIT.as_secs()
        ))
        .await
        .map_err(|e| failed("setting the lock timeout", &e))?;
        let exists: Option<String> = tx
            .query_one("SELECT to_regclass('kron.settings')::text", &[])
            .await
            .map_err(|e| failed("reading the schema", &e))?
            .get(0);
        let mut version = 0;
        if exists.is_some() {
            let row = tx
                .query_opt(
                    "SELECT value::integer FROM kron.settings WHERE key = 'schema_version'",
                    &[],
                )
                .await
                .map_err(|e| failed("reading the schema version", &e))?;
            version = row.map_or(0, |r| r.get::<_, i32>(0));
        }
        strangers_in_kron_host(&tx).await?;
        let mut said = Vec::new();
        if version > CURRENT {
            return Err(Error::Conflict(format!(
                "the fleet schema is at version {version}, newer than this otpd knows \
                 ({CURRENT}); upgrade otpd first"
            )));
        }
        for (number, file, sql) in MIGRATIONS {
            if number <= version {
                continue;
            }
            tx.batch_execute(sql).await.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    Error::Conflict(format!(
                        "applying {file}: a table it changes was busy for {} s (a long \
                         statement or an open transaction holds it); nothing was changed: run \
                         `kronctl fleet init` again",
                        LOCK_WAIT.as_secs()
                    ))
                } else {
                    failed(&format!("applying {file}"), &e)
                }
            })?;
            said.push(format!("applied migration {file}"));
        }
        said.extend(settle_host_roles(&mut tx).await?);
        said.extend(close_public_schema(&tx).await?);
        no_function_for_public(&tx).await?;
        if version < CURRENT {
            tx.execute(
                "INSERT INTO kron.settings (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&CURRENT.to_string()],
            )
            .await
            .map_err(|e| failed("recording the version", &e))?;
        } else {
            said.push(format!(
                "schema already at version {CURRENT}: nothing to apply"
            ));
        }
        if let Some(path) = key_file {
            tx.execute(
                "INSERT INTO kron.settings (key, value) VALUES ('key_file', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&path],
            )
            .await
            .map_err(|e| failed("setting key_file", &e))?;
            said.push(format!(
                "seed key file set to {path} (on the database server)"
            ));
        }
        tx.query_one("SELECT length(kron.seed_key())", &[])
            .await
            .map_err(|e| failed("the database cannot read the seed key file", &e))?;
        said.push("the database reads the seed key file".into());
        committing.started();
        tx.commit().await.map_err(|e| failed("committing", &e))?;
        Ok(said)
    }))
}

/// Gives every host role of the fleet that lacks them the settings of `kron.set_host_role`
/// (`007_host_roles.sql`, `015_lock_wait.sql`), each in a savepoint: a role the owner may not
/// alter (from PostgreSQL 16, one created before an upgrade from 15 carries no ADMIN OPTION for
/// its creator) is reported with the fix, and the rest of `fleet init` goes on; the next run
/// tries it again.
async fn settle_host_roles(tx: &mut tokio_postgres::Transaction<'_>) -> Result<Vec<String>> {
    let roles: Vec<String> = tx
        .query(
            "SELECT h.role::text FROM kron.hosts h JOIN pg_roles r ON r.rolname = h.role \
             WHERE NOT kron.host_role_ready(h.role) ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| failed("reading the host roles", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut said = Vec::new();
    for role in roles {
        let savepoint = tx
            .savepoint("host_role")
            .await
            .map_err(|e| failed("a savepoint", &e))?;
        match savepoint
            .execute("SELECT kron.set_host_role($1)", &[&role])
            .await
        {
            Ok(_) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| failed("releasing a savepoint", &e))?;
                said.push(format!("host role {role}: settings given"));
            }
            Err(e) => {
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| failed("rolling back a savepoint", &e))?;
                said.push(format!(
                    "host role {role}: its settings could not be given ({}); as a superuser, \
                     GRANT {role} TO the owner WITH ADMIN OPTION, then run fleet init again",
                    describe(&e)
                ));
            }
        }
    }
    Ok(said)
}

/// Refuses a cluster where `kron_host` has members that are not hosts of this fleet: the group
/// role is the cluster's, not the database's, so a second fleet in the same cluster (or a role
/// granted it by hand) could call every function this fleet grants its hosts. One fleet per
/// cluster (docs/fleet.md, "Set-up").
async fn strangers_in_kron_host(tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    let hosts_table: Option<String> = tx
        .query_one("SELECT to_regclass('kron.hosts')::text", &[])
        .await
        .map_err(|e| failed("reading the schema", &e))?
        .get(0);
    // The owner running this is no stranger. From PostgreSQL 16 a role that creates another
    // (the owner, kron_host in 001) is made a member of it with ADMIN only, which neither
    // inherits its rights nor may SET ROLE to it: no stranger either. (Before 16 the columns do
    // not exist, and such memberships are not made.)
    let version: i32 = tx
        .query_one("SELECT current_setting('server_version_num')::integer", &[])
        .await
        .map_err(|e| failed("reading the server's version", &e))?
        .get(0);
    let uses_rights = if version >= 160_000 {
        " AND (a.inherit_option OR a.set_option)"
    } else {
        ""
    };
    let members = format!(
        "FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid \
         JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = 'kron_host' \
         AND m.rolname <> current_user{uses_rights}"
    );
    let query = match hosts_table {
        Some(_) => format!(
            "SELECT m.rolname::text {members} \
             AND m.rolname NOT IN (SELECT role FROM kron.hosts) ORDER BY 1"
        ),
        None => format!("SELECT m.rolname::text {members} ORDER BY 1"),
    };
    let strangers: Vec<String> = tx
        .query(&query, &[])
        .await
        .map_err(|e| failed("reading kron_host's members", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if strangers.is_empty() {
        return Ok(());
    }
    let shown = strangers
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = strangers.len().saturating_sub(5);
    Err(Error::Conflict(format!(
        "role kron_host has members that are not hosts of this fleet ({shown}{}): another \
         fleet in this PostgreSQL cluster, or a role granted kron_host by hand. Each fleet \
         needs a cluster of its own; revoke kron_host from roles that are not this fleet's hosts",
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )))
}

/// Makes sure no host role may create objects in schema `public`, and refuses to go on if one
/// still may. The owner's functions that enroll, import and make offline packs search `public`
/// (pgcrypto is there): a function planted there by a host (an overload of `hmac` or
/// `convert_to` that an untyped argument prefers) would run with the owner's rights and could
/// read every seed. PostgreSQL 15 makes new databases that way, but a database made from an
/// older template, or a grant by hand, may open it. The REVOKE changes something only where
/// the owner owns `public` (the database's owner does, through `pg_database_owner`); elsewhere
/// PostgreSQL merely warns, so what counts is the check after it.
async fn close_public_schema(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<String>> {
    let open_before = roles_creating_in_public(tx).await?;
    if open_before.is_empty() {
        return Ok(Vec::new());
    }
    tx.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .await
        .map_err(|e| failed("closing schema public", &e))?;
    let open = roles_creating_in_public(tx).await?;
    if open.is_empty() {
        return Ok(vec![
            "revoked CREATE on schema public from PUBLIC (host roles could create objects in it)"
                .into(),
        ]);
    }
    let owner: String = tx
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'",
            &[],
        )
        .await
        .map_err(|e| failed("reading the owner of schema public", &e))?
        .get(0);
    Err(Error::Conflict(format!(
        "host roles may create objects in schema public ({}), where the functions that \
         enroll, import and make offline packs look up pgcrypto: a host could plant a function \
         there that runs with the owner's rights. As public's owner ({owner}), run \
         `REVOKE CREATE ON SCHEMA public FROM PUBLIC` (and from each role named, or from the \
         role that granted it to them), then run this again",
        open.join(", ")
    )))
}

/// Refuses to commit while PUBLIC may execute a function in schema kron: most of them run with
/// the owner's rights, and only the ones granted to kron_host (and kron_auditor) are meant for
/// anyone but the owner. PostgreSQL lets PUBLIC execute every new function unless told
/// otherwise: each migration revokes that, and from version 14 the owner's default privileges
/// do too; this is the check that neither was missed (nor a grant made by hand). A function
/// with no ACL (`proacl` NULL) has the built-in default, which includes PUBLIC's EXECUTE.
async fn no_function_for_public(tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    let open: Vec<String> = tx
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'kron'::regnamespace
               AND (p.proacl IS NULL OR EXISTS (
                    SELECT FROM pg_catalog.aclexplode(p.proacl) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| failed("reading who may execute the fleet's functions", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "every role may execute these functions of schema kron: {}. Most run with the owner's \
         rights; as the owner, run `REVOKE EXECUTE ON FUNCTION <each> FROM PUBLIC`, then run \
         this again (nothing was changed)",
        open.join(", ")
    )))
}

/// kron_host and its members (but the owner running this) that may create in `public`, by
/// their own grants, a group's, or PUBLIC's.
async fn roles_creating_in_public(tx: &tokio_postgres::Transaction<'_>) -> Result<Vec<String>> {
    Ok(tx
        .query(
            "SELECT r.rolname::text FROM pg_roles r
             WHERE r.rolname <> current_user AND NOT r.rolsuper
               AND (r.rolname = 'kron_host' OR r.oid IN (
                    SELECT a.member FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid
                    WHERE g.rolname = 'kron_host'))
               AND CASE WHEN to_regnamespace('public') IS NULL THEN false
                   ELSE has_schema_privilege(r.oid, 'public', 'CREATE') END
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| failed("reading who may create objects in schema public", &e))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// The role of host `name` ("kron_" + name).
pub fn role_of(name: &str) -> String {
    format!("kron_{name}")
}

/// PostgreSQL's longest name (NAMEDATALEN − 1): a longer role name would be cut short, and two
/// hosts whose names share their start would get the same role.
const MAX_ROLE_NAME: usize = 63;

/// Creates the role of host `name` (or gives it a new password), records it in kron.hosts,
/// and returns the host's `[fleet]` section, which names `password_file`. kronctl made the
/// password and wrote it aside before asking: the role's new password never exists without
/// its file.
pub fn add_host(
    runtime: &Handle,
    owner: &Owner<'_>,
    name: &str,
    password: &str,
    password_file: &Path,
) -> Result<String> {
    kron_common::config::check_host_name(name).map_err(Error::InvalidArgument)?;
    if !password_file.is_absolute() {
        return Err(Error::InvalidArgument(
            "the password file must be an absolute path".into(),
        ));
    }
    // What kronctl makes: 48 hex digits. Never an empty or guessable one, nor one that a
    // password file's first line could not hold.
    if password.len() < 32
        || password.len() > 256
        || !password.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::InvalidArgument(
            "a host's password must be 32 to 256 printable characters".into(),
        ));
    }
    let role = role_of(name);
    if role.len() > MAX_ROLE_NAME {
        return Err(Error::InvalidArgument(format!(
            "host name too long for a role: {} characters at most",
            MAX_ROLE_NAME - role_of("").len()
        )));
    }
    let target = owner.target()?;
    let committing = Committing::default();
    let outcome = runtime.block_on(owner_call("fleet add-host", &committing, async {
        let mut client = target
            .connect()
            .await
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| failed("beginning", &e))?;
        // (exists, whether this fleet's kron.hosts has it as this very host)
        let (exists, ours): (bool, bool) = tx
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1),
                        EXISTS (SELECT FROM kron.hosts WHERE role = $1 AND host = $2)",
                &[&role, &name],
            )
            .await
            .map(|row| (row.get(0), row.get(1)))
            .map_err(|e| failed("looking up the role (run kronctl fleet init first)", &e))?;
        // A role that is not this fleet's host of that name is someone else's: the owner, an
        // auditor, a person, another fleet's host in the same cluster. Taking it over would
        // give it a new password, written to this host's file, and host rights here.
        if exists && !ours {
            return Err(Error::Conflict(format!(
                "role {role} already exists and is not host {name} of this fleet; \
                 choose another host name"
            )));
        }
        // The server gets the password's SCRAM verifier, never the password: a statement may
        // be logged (log_statement = ddl, a failed statement, pg_stat_activity).
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let statement: String = tx
            .query_one(
                if exists {
                    "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
                } else {
                    "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
                },
                &[&role, &verifier],
            )
            .await
            .map_err(|e| failed("preparing the role", &e))?
            .get(0);
        tx.batch_execute(&statement)
            .await
            .map_err(|e| failed("creating the role", &e))?;
        // The settings every host role logs in with (007_host_roles.sql and 015_lock_wait.sql say
        // which and why).
        tx.execute("SELECT kron.set_host_role($1)", &[&role])
            .await
            .map_err(|e| failed("setting the role's settings", &e))?;
        let grant: String = tx
            .query_one("SELECT format('GRANT kron_host TO %I', $1::text)", &[&role])
            .await
            .map_err(|e| failed("preparing the grant", &e))?
            .get(0);
        tx.batch_execute(&grant)
            .await
            .map_err(|e| failed("granting kron_host (run kronctl fleet init first)", &e))?;
        // A grant since `fleet init` may have opened it again; never hand out a role that can.
        close_public_schema(&tx).await?;
        tx.execute(
            "INSERT INTO kron.hosts (role, host) VALUES ($1, $2)
             ON CONFLICT (role) DO UPDATE SET host = EXCLUDED.host",
            &[&role, &name],
        )
        .await
        .map_err(|e| failed("recording the host", &e))?;
        committing.started();
        tx.commit().await.map_err(|e| failed("committing", &e))?;
        Ok::<bool, Error>(exists)
    }));
    if let Err(e) = outcome {
        if !committing.sent() {
            return Err(e);
        }
        // The role may have the new password now: kronctl keeps it where the admin finds it.
        return Err(Error::Unreachable(format!(
            "{e}; the role may have its new password"
        )));
    }
    let url = with_user(owner.url, &role)?;
    Ok(format!(
        "[fleet]\nurl = \"{url}\"\nhost = \"{name}\"\nca_file = \"{}\"\npassword_file = \"{}\"\n",
        owner.ca_file.display(),
        password_file.display()
    ))
}

/// `url` with its role replaced by `role`.
fn with_user(url: &str, role: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidArgument("url must start with postgresql://".into()))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Ok(format!("{scheme}://{role}@{hosts}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_urls_name_the_host_role() {
        assert_eq!(
            with_user(
                "postgresql://kron_owner@db1.example.com,db2.example.com/kron?target_session_attrs=read-write",
                "kron_web01"
            )
            .unwrap(),
            "postgresql://kron_web01@db1.example.com,db2.example.com/kron?target_session_attrs=read-write"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1:5432/kron", "kron_a").unwrap(),
            "postgres://kron_a@127.0.0.1:5432/kron"
        );
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, (number, file, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*number as usize, index + 1);
            assert!(file.starts_with(&format!("{number:03}_")), "{file}");
            assert!(!sql.trim().is_empty());
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(CURRENT));
    }
}
