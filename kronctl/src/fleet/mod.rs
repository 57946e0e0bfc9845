//! `kronctl fleet`: thin clients of otpd's root-only fleet methods. otpd does the database
//! work (it reads the credential files as root); kronctl only turns paths absolute, makes the
//! call and prints the answer.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | one function per subcommand |
//! | `render.rs` | text and JSON output |
//!
//! Its command line is `cli/fleet.rs`, with the rest of kronctl's.

mod render;

use std::path::{Path, PathBuf};

use crate::cli::{Cli, FleetArgs, FleetCommand};
use crate::client::Otpd;
use crate::error::Error;
use crate::output::print;

pub async fn run(cli: &Cli, args: &FleetArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let proxy = otpd.proxy();
    match &args.command {
        FleetCommand::Init { owner, key_file } => {
            let said = proxy
                .fleet_init(
                    &owner.url,
                    &path_arg(owner.ca_file.as_deref())?,
                    &path_arg(owner.owner_password_file.as_deref())?,
                    key_file.as_deref().unwrap_or(""),
                )
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::lines(&said, cli.json))
        }
        FleetCommand::AddHost {
            name,
            owner,
            password_file,
        } => {
            let password_file = path_arg(Some(password_file))?;
            let section = proxy
                .fleet_add_host(
                    name,
                    &owner.url,
                    &path_arg(owner.ca_file.as_deref())?,
                    &path_arg(owner.owner_password_file.as_deref())?,
                    &password_file,
                )
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::add_host(name, &section, &password_file, cli.json))
        }
        FleetCommand::Status => {
            let status = proxy.fleet_status().await.map_err(|e| otpd.fail(e))?;
            print(&render::status(&status, cli.json))
        }
        FleetCommand::OfflineAdd { user } => {
            let added = proxy
                .fleet_offline_add(user)
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::offline_add(user, added, cli.json))
        }
        FleetCommand::Push => {
            let results = proxy.fleet_push().await.map_err(|e| otpd.fail(e))?;
            print(&render::push(&results, cli.json))
        }
        FleetCommand::Log { user, owner, limit } => {
            let rows = proxy
                .fleet_log(
                    &owner.url,
                    &path_arg(owner.ca_file.as_deref())?,
                    &path_arg(owner.owner_password_file.as_deref())?,
                    user.as_deref().unwrap_or(""),
                    *limit,
                )
                .await
                .map_err(|e| otpd.fail(e))?;
            print(&render::log(&rows, cli.json))
        }
    }
}

/// A path as otpd needs it: absolute (otpd runs elsewhere), "" when not given.
fn path_arg(path: Option<&Path>) -> Result<String, Error> {
    let Some(path) = path else {
        return Ok(String::new());
    };
    let absolute: PathBuf = std::path::absolute(path).map_err(|source| Error::Io {
        what: format!("cannot resolve {}", path.display()),
        source,
    })?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|_| Error::Usage("file paths must be UTF-8".into()))
}
