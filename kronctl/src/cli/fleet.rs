//! The command line of `kronctl fleet` (docs/kronctl.md, docs/fleet.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `kronctl fleet SUBCOMMAND`
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// How kronctl reaches the database as its owner (or an auditor), for this call only.
#[derive(Debug, Args)]
pub struct OwnerArgs {
    /// The database as its owner: postgresql://OWNER@HOST[,HOST...]/DB[?...]
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub url: String,

    /// The CA that signed the database servers' certificates [default: this host's ca_file]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// The owner's password, first line of FILE (root, mode 0600); none when omitted
    #[arg(long, value_name = "FILE")]
    pub owner_password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create or upgrade the fleet's schema, roles, functions and grants (root, as the owner)
    ///
    /// Idempotent: migrations already applied are skipped, and it says what it did. The seed
    /// key is a file of 64 hex digits on the database server, readable by the database's
    /// system user only; --key-file names it (needed the first time). See docs/fleet.md.
    #[command(after_help = "\
Examples:
  sudo kronctl fleet init --url 'postgresql://kron_owner@db1.example.com/kron' \\
      --ca-file /etc/kron/fleet-ca.pem --owner-password-file /root/kron-owner-password \\
      --key-file /etc/postgresql/kron-seed.key")]
    Init {
        #[command(flatten)]
        owner: OwnerArgs,

        /// The seed key's path on the database server (kept from before when omitted)
        #[arg(long, value_name = "PATH")]
        key_file: Option<String>,
    },

    /// Create a host's database role, write its new password to FILE, print its [fleet] section
    ///
    /// Running it again for the same NAME gives the role a new password; a role kron_NAME that
    /// is not already this fleet's host NAME (the owner's, another fleet's) is refused. The
    /// server gets the password's SCRAM verifier only. Copy FILE (mode 0600, root) and the
    /// printed section to the host.
    #[command(after_help = "\
Examples:
  sudo kronctl fleet add-host web01 --url 'postgresql://kron_owner@db1.example.com/kron' \\
      --ca-file /etc/kron/fleet-ca.pem --password-file /root/web01-password")]
    AddHost {
        /// The host's name in the fleet (a-z, 0-9, '-', '_', '.'; at most 58); its role is kron_NAME
        #[arg(value_name = "NAME", value_parser = parse_host)]
        name: String,

        #[command(flatten)]
        owner: OwnerArgs,

        /// Where to write the host's new password (created 0600)
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
    },

    /// Show this host's fleet link and offline state, and every host's packs (root)
    ///
    /// This host: reachable or not and since when, schema version, primary, replication; its
    /// offline packs (users, age of the oldest and newest, when the first runs out) and the
    /// offline uses and failures waiting in its journal. Then every host of the fleet as the
    /// database knows it: users it holds packs of, its last pack fetch and journal sync.
    Status,

    /// Give USER an offline pack on this host before their first login here (root)
    ///
    /// Users get a pack on a host when they log in there; this adds one ahead of time (an admin
    /// who must be able to log in on a host during an outage). The user keeps it for
    /// offline_keep, or longer by logging in here. See docs/fleet.md, "Offline logins".
    #[command(after_help = "\
Examples:
  sudo kronctl fleet offline-add alice")]
    OfflineAdd {
        /// The user (enrolled in the fleet)
        #[arg(value_name = "USER", value_parser = parse_user)]
        user: String,
    },

    /// Move this host's local tokens into the fleet (root)
    ///
    /// A user the fleet already knows keeps the fleet's token and is listed as a conflict.
    /// The local store is left as it was. otpd pushes the users a page at a time; a push that
    /// stops half-way is finished by running it again (pushing is idempotent: the users pushed
    /// already are then listed as conflicts).
    Push,

    /// Show the fleet's logins for a user, or everyone's, newest first (root)
    ///
    /// Reads the audit table as the role --url names: the owner, or a role granted
    /// kron_auditor. Host roles cannot read it.
    #[command(after_help = "\
Examples:
  sudo kronctl fleet log alice --url 'postgresql://kron_audit@db1.example.com/kron' \\
      --owner-password-file /root/kron-audit-password --limit 20")]
    Log {
        /// Whose logins to show; everyone's when omitted
        #[arg(value_name = "USER", value_parser = parse_user)]
        user: Option<String>,

        #[command(flatten)]
        owner: OwnerArgs,

        /// Rows to show at most
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
}

fn parse_url(raw: &str) -> Result<String, String> {
    kron_common::config::check_url(raw)?;
    Ok(raw.to_owned())
}

fn parse_host(raw: &str) -> Result<String, String> {
    kron_common::config::check_host_name(raw)?;
    Ok(raw.to_owned())
}

fn parse_user(raw: &str) -> Result<String, String> {
    kron_proto::validate_user(raw)?;
    Ok(raw.to_owned())
}
