//! One function per subcommand: ask otpd, render the answer, print it.
#![forbid(unsafe_code)]

use std::ops::Deref;
use std::path::Path;

use kron_proto::{Channel, Enrollment};
use zeroize::Zeroize;

use crate::cli::{Cli, Command, ContactArgs};
use crate::client::Otpd;
use crate::error::Error;
use crate::lifecycle;
use crate::output::{print, print_secret};
use crate::render::{self, AdminAction, EnrollExtras};
use crate::secret_file::SecretFile;
use crate::time::Clock;

pub async fn run(cli: &Cli) -> Result<(), Error> {
    let clock = Clock::local();
    match &cli.command {
        Command::Enroll {
            user,
            send: Some(kind),
            via,
            ..
        } => {
            let user = user.as_deref().unwrap_or("");
            match (kind.enrollment_channel(), via) {
                (Some(channel), _) => deliver(cli, user, channel, &clock).await,
                (None, Some(via)) => crate::link::send(cli, user, *via, &clock).await,
                // cli::parse_from refuses this already.
                (None, None) => Err(Error::Usage("--send link needs --via".into())),
            }
        }
        Command::Enroll {
            user, link: true, ..
        } => crate::link::show(cli, user.as_deref().unwrap_or(""), &clock).await,
        Command::RevokeLink { user } => crate::link::revoke(cli, user).await,
        Command::Enroll { user, png, .. } => {
            enroll(cli, user.as_deref(), png.as_deref(), &clock).await
        }
        Command::Contact(args) => contact(cli, args).await,
        Command::Confirm(args) => {
            // Already checked by cli::parse_from; checked again so this never sends garbage.
            let target = args.target().map_err(Error::Usage)?;
            let otpd = Otpd::connect(&cli.bus).await?;
            otpd.confirm(target.user.as_deref().unwrap_or(""), &target.code)
                .await?;
            let user = target.user.as_deref();
            print(&if cli.json {
                render::confirm_json(user)
            } else {
                render::confirm_human(user)
            })
        }
        Command::Status { user } => {
            crate::link::status(cli, user.as_deref().unwrap_or(""), &clock).await
        }
        Command::List => crate::list::run(cli, &clock).await,
        Command::Reset { user } => admin(cli, AdminAction::Reset, user).await,
        Command::Unlock { user } => admin(cli, AdminAction::Unlock, user).await,
        Command::RecoveryCodes(args) => lifecycle::recovery_codes(cli, args).await,
        Command::Export(args) => lifecycle::export(cli, args).await,
        Command::Import(args) => lifecycle::import(cli, args).await,
        Command::ExportToken(args) => lifecycle::export_token(cli, args).await,
        Command::Doctor(args) => crate::doctor::run(cli, args).await,
        Command::Fleet(args) => crate::fleet::run(cli, args).await,
    }
}

async fn enroll(
    cli: &Cli,
    user: Option<&str>,
    png: Option<&Path>,
    clock: &Clock,
) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    // Before calling otpd, so an unusable path leaves no fresh enrollment behind.
    let png_file = png.map(SecretFile::create).transpose()?;
    let enrollment = Wiped(match otpd.enroll(user.unwrap_or(""), "").await {
        Err(Error::ValidationRequired(_)) => validated_enrollment(&otpd, user, clock).await?,
        other => other?,
    });

    if let Some(file) = png_file {
        file.finish_qr_png(&enrollment.uri)?;
    }

    let text = if cli.json {
        render::enroll_json(&enrollment, png)
    } else {
        // A URI too long for a QR code still leaves the secret for manual entry.
        let mut qr = kron_common::qr::terminal(&enrollment.uri).ok();
        let extras = EnrollExtras {
            qr: qr.as_deref(),
            png,
            requested_user: user,
        };
        let text = render::enroll_human(&enrollment, &extras, clock);
        qr.zeroize();
        text
    };
    print_secret(text)
}

/// Validated enrollment: otpd sends a code to the user's contact, the user types it here.
/// The prompt goes to stderr so stdout keeps only the result (`--json` stays one value).
async fn validated_enrollment(
    otpd: &Otpd,
    user: Option<&str>,
    clock: &Clock,
) -> Result<Enrollment, Error> {
    let user = user.unwrap_or("");
    let delivery = otpd.send_enrollment_code(user).await?;
    eprintln!("{}", render::code_sent_human(&delivery, clock));
    let code = crate::passphrase::code("Verification code: ")?;
    otpd.enroll(user, &code).await
}

/// `enroll USER --send CHANNEL`: otpd makes the enrollment and sends it; only where it went
/// and until when is shown.
async fn deliver(cli: &Cli, user: &str, channel: Channel, clock: &Clock) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let delivery = otpd.deliver_enrollment(user, channel.as_str()).await?;
    print(&if cli.json {
        render::delivery_json(user, &delivery)
    } else {
        render::delivery_human(user, &delivery, clock)
    })
}

/// `contact USER [...]`: applies the changes asked for, then shows the result (masked).
async fn contact(cli: &Cli, args: &ContactArgs) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    for (channel, address) in args.changes() {
        otpd.set_contact(&args.user, channel.as_str(), address)
            .await?;
    }
    let status = otpd.status(&args.user).await?;
    print(&if cli.json {
        render::contact_json(&status)
    } else {
        render::contact_human(&status)
    })
}

async fn admin(cli: &Cli, action: AdminAction, user: &str) -> Result<(), Error> {
    let otpd = Otpd::connect(&cli.bus).await?;
    let changed = match action {
        AdminAction::Reset => otpd.reset(user).await?,
        AdminAction::Unlock => otpd.unlock(user).await?,
    };
    print(&if cli.json {
        render::admin_json(action, user, changed)
    } else {
        render::admin_human(action, user, changed)
    })
}

/// An enrollment whose secret and URI (which embeds the secret) are overwritten when dropped,
/// on every path, so they do not linger in freed memory longer than needed.
struct Wiped(Enrollment);

impl Deref for Wiped {
    type Target = Enrollment;
    fn deref(&self) -> &Enrollment {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.secret.zeroize();
        self.0.uri.zeroize();
    }
}
