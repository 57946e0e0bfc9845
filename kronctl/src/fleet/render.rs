//! What `kronctl fleet` prints: text for people, one JSON value for scripts.

use kron_proto::{FleetLogEntry, FleetStatus};
use serde::Serialize;

use crate::render::{json_line, one_line};

/// `fleet init`: what otpd did, a line each.
pub fn lines(said: &[String], json: bool) -> String {
    if json {
        #[derive(Serialize)]
        struct Done<'a> {
            done: &'a [String],
        }
        return json_line(&Done { done: said });
    }
    said.iter()
        .map(|line| format!("{}\n", one_line(line)))
        .collect()
}

/// `fleet add-host`: the `[fleet]` section on stdout (text), or the section and its parts.
pub fn add_host(name: &str, section: &str, password_file: &str, json: bool) -> String {
    if json {
        #[derive(Serialize)]
        struct Added<'a> {
            host: &'a str,
            role: String,
            password_file: &'a str,
            section: &'a str,
        }
        return json_line(&Added {
            host: name,
            role: format!("kron_{name}"),
            password_file,
            section,
        });
    }
    let lines: String = section
        .lines()
        .map(|line| format!("{}\n", one_line(line)))
        .collect();
    format!(
        "# Host {} may now log in as role kron_{}. Put this into its /etc/kron/otpd.toml and\n\
         # copy {} there (owner root, mode 0600):\n{lines}",
        one_line(name),
        one_line(name),
        one_line(password_file)
    )
}

pub fn status(status: &FleetStatus, json: bool) -> String {
    if json {
        return json_line(status);
    }
    if !status.configured {
        return "This host has no [fleet] section: its tokens are in its own store.\n".into();
    }
    let clock = crate::time::Clock::local();
    let when = |at: u64| match at {
        0 => "-".to_owned(),
        at => clock.datetime_and_relative(at),
    };
    let mut out = format!(
        "host:            {}\ndatabase:        {}\n",
        one_line(&status.host),
        one_line(&status.url)
    );
    if status.reachable {
        out.push_str(&format!(
            "reachable:       yes (online since {})\nknown there as:  {}\nschema version:  {}\nserver:          PostgreSQL {}\nprimary:         {}\n",
            when(status.since),
            one_line(&status.database_host),
            status.schema_version,
            one_line(&status.server_version),
            if status.primary { "yes" } else { "no (a standby)" }
        ));
        if status.database_host != status.host {
            // Offline packs, double-use reports and the audit go by the name the database
            // knows a connection by: a pooler logging in as one role for every host makes
            // them all one host.
            out.push_str(&format!(
                "warning:         the database knows this connection as {}, not {}: check that \
                 `url` names this host's own role (a pooler must log in as each host's role)\n",
                one_line(&status.database_host),
                one_line(&status.host)
            ));
        }
        if status.replicas.is_empty() {
            out.push_str("replication:     no standby visible to this role\n");
        }
        for replica in &status.replicas {
            out.push_str(&format!(
                "replica:         {} {} {}\n",
                one_line(&replica.name),
                one_line(&replica.state),
                one_line(&replica.sync_state)
            ));
        }
    } else {
        out.push_str(&format!(
            "reachable:       no (offline since {}) — {}\n",
            when(status.since),
            one_line(&status.error)
        ));
    }
    if status.offline_window == 0 {
        out.push_str("offline logins:  off (offline_window = 0)\n");
    } else {
        out.push_str(&format!(
            "offline logins:  codes up to {} ahead\n\
             packs:           {} users; the first runs out {}\n\
             newest pack:     {}\noldest pack:     {}\n",
            crate::time::duration(status.offline_window),
            status.pack_users,
            when(status.pack_ends),
            when(status.pack_newest),
            when(status.pack_oldest),
        ));
    }
    out.push_str(&format!(
        "journal:         {} offline entries waiting for the database\n",
        status.journal_waiting
    ));
    if !status.hosts.is_empty() {
        out.push_str("\nhosts as the database knows them:\n");
        out.push_str(&format!(
            "  {:<20} {:>6}  {:<22} {}\n",
            "HOST", "USERS", "LAST PACK FETCH", "JOURNAL SYNCED"
        ));
        for host in &status.hosts {
            out.push_str(&format!(
                "  {:<20} {:>6}  {:<22} {}\n",
                one_line(&host.host),
                host.users,
                when(host.fetched),
                when(host.synced)
            ));
        }
    }
    out
}

/// `fleet offline-add`.
pub fn offline_add(user: &str, added: bool, json: bool) -> String {
    if json {
        #[derive(Serialize)]
        struct Added<'a> {
            user: &'a str,
            changed: bool,
        }
        return json_line(&Added {
            user,
            changed: added,
        });
    }
    match added {
        true => format!(
            "{} gets an offline pack on this host within a minute (kronctl fleet status shows it).\n",
            one_line(user)
        ),
        false => format!(
            "{} already has an offline pack on this host; it is kept for offline_keep from now.\n",
            one_line(user)
        ),
    }
}

pub fn log(rows: &[FleetLogEntry], json: bool) -> String {
    if json {
        return json_line(&rows);
    }
    if rows.is_empty() {
        return "No audit rows.\n".into();
    }
    rows.iter()
        .map(|row| {
            let mut line = format!(
                "{} {} {} user={}",
                crate::time::Clock::local().datetime(row.at),
                one_line(&row.host),
                one_line(&row.event),
                one_line(&row.user)
            );
            for (key, value) in [
                ("service", &row.service),
                ("rhost", &row.rhost),
                ("tty", &row.tty),
            ] {
                if !value.is_empty() {
                    line.push_str(&format!(" {key}={}", one_line(value)));
                }
            }
            if !row.detail.is_empty() {
                line.push_str(&format!(" ({})", one_line(&row.detail)));
            }
            line.push('\n');
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::status as status_of;
    use super::*;
    use kron_proto::FleetHost;

    #[test]
    fn status_shows_the_offline_side_and_every_host() {
        let status = FleetStatus {
            configured: true,
            host: "b".into(),
            url: "postgresql://kron_b@db/kron".into(),
            reachable: false,
            error: "store: fleet database unreachable".into(),
            offline_window: 28_800,
            since: 1_735_826_000,
            pack_users: 3,
            pack_newest: 1_735_825_000,
            pack_oldest: 1_735_820_000,
            pack_ends: 1_735_850_000,
            journal_waiting: 6,
            ..FleetStatus::default()
        };
        let text = status_text(&status);
        for expected in [
            "reachable:       no (offline since 2025-01-02",
            "offline logins:  codes up to 8 hours ahead",
            "packs:           3 users; the first runs out 2025-01-02",
            "oldest pack:     2025-01-02",
            "journal:         6 offline entries waiting",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
        let online = FleetStatus {
            reachable: true,
            offline_window: 0,
            hosts: vec![FleetHost {
                host: "a".into(),
                users: 12,
                fetched: 1_735_825_000,
                synced: 1_735_825_060,
            }],
            ..status
        };
        let text = status_text(&online);
        assert!(
            text.contains("warning:         the database knows this connection as , not b"),
            "{text}"
        );
        let text = status_text(&FleetStatus {
            database_host: "b".into(),
            ..online.clone()
        });
        assert!(!text.contains("warning"), "{text}");
        assert!(text.contains("(online since 2025-01-02"), "{text}");
        assert!(text.contains("offline logins:  off"), "{text}");
        assert!(
            text.contains("\n  a                        12  2025-01-02"),
            "{text}"
        );
        assert!(json_line(&online).contains("\"journal_waiting\":6"));
    }

    fn status_text(status: &FleetStatus) -> String {
        status_of(status, false)
    }
}
