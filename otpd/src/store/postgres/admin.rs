//! What `kronctl fleet status` and `kronctl fleet log` show: the database as this host's role
//! sees it, and the fleet's audit rows read with a role allowed to (the owner or an auditor).

use super::PgStore;
use super::link::{column, database_error};
use super::schema::Owner;
use crate::error::{Error, Result, describe};
use kron_proto::{FleetHost, FleetLogEntry, FleetReplica, FleetStatus};
use serde::Deserialize;
use tokio::runtime::Handle;

#[derive(Deserialize)]
struct StatusRow {
    schema_version: Option<u32>,
    server_version: String,
    primary: bool,
    host: String,
    #[serde(default)]
    replicas: Vec<ReplicaRow>,
    #[serde(default)]
    hosts: Vec<HostRow>,
}

#[derive(Deserialize)]
struct HostRow {
    host: String,
    users: u32,
    fetched: u64,
    synced: u64,
}

#[derive(Deserialize)]
struct ReplicaRow {
    name: String,
    state: String,
    sync_state: String,
}

/// This host's view of its fleet: asks the database now; unreachable is a status, not an error.
pub fn status(store: &PgStore) -> FleetStatus {
    let mut status = FleetStatus {
        configured: true,
        host: store.host().to_owned(),
        url: store.link().target().url.clone(),
        ..FleetStatus::default()
    };
    let answer = store
        .link()
        .query_one_long("SELECT kron.status()::text", &[])
        .and_then(|row| column::<String>(&row, 0))
        .and_then(|text| {
            serde_json::from_str::<StatusRow>(&text)
                .map_err(|e| database_error(format!("fleet database: unreadable status: {e}")))
        });
    let (_, since) = store.link().state();
    status.since = since;
    match answer {
        Ok(row) => {
            status.reachable = true;
            status.schema_version = row.schema_version.unwrap_or(0);
            status.server_version = row.server_version;
            status.primary = row.primary;
            status.database_host = row.host;
            status.replicas = row
                .replicas
                .into_iter()
                .map(|r| FleetReplica {
                    name: r.name,
                    state: r.state,
                    sync_state: r.sync_state,
                })
                .collect();
            status.hosts = row
                .hosts
                .into_iter()
                .map(|h| FleetHost {
                    host: h.host,
                    users: h.users,
                    fetched: h.fetched,
                    synced: h.synced,
                })
                .collect();
        }
        Err(e) => status.error = e.to_string(),
    }
    status
}

/// The audit rows of `user` ("" = all), newest first, at most `limit`.
pub fn log(
    runtime: &Handle,
    owner: &Owner<'_>,
    user: &str,
    limit: u32,
) -> Result<Vec<FleetLogEntry>> {
    let target = owner.target()?;
    let user = (!user.is_empty()).then_some(user);
    let limit = i32::try_from(limit.min(kron_proto::MAX_FLEET_LOG)).unwrap_or(1);
    let committing = super::target::Committing::default();
    runtime.block_on(super::target::owner_call("fleet log", &committing, async {
        let client = target
            .connect()
            .await
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let rows = client
            .query(
                "SELECT extract(epoch FROM at)::int8, host, event, \"user\", service, rhost, tty,
                        caller_uid, detail
                 FROM kron.fleet_log($1, $2)",
                &[&user, &limit],
            )
            .await
            .map_err(|e| Error::InvalidArgument(format!("reading the audit: {}", describe(&e))))?;
        rows.iter()
            .map(|row| {
                Ok(FleetLogEntry {
                    at: u64::try_from(column::<i64>(row, 0)?).unwrap_or(0),
                    host: column(row, 1)?,
                    event: column(row, 2)?,
                    user: column(row, 3)?,
                    service: column(row, 4)?,
                    rhost: column(row, 5)?,
                    tty: column(row, 6)?,
                    caller_uid: u32::try_from(column::<i64>(row, 7)?).unwrap_or(0),
                    detail: column(row, 8)?,
                })
            })
            .collect()
    }))
}
