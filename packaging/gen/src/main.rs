//! `kron-packaging-gen OUT_DIR`: writes the files packaging generates from the programs' own
//! clap definitions, so the man pages and completions can never drift from the command lines:
//!
//! - `OUT_DIR/man/kronctl.1` and one page per subcommand (`kronctl-enroll.1`, ...),
//! - `OUT_DIR/man/otpd.8` and `OUT_DIR/man/kron-web.8`,
//! - `OUT_DIR/completions/{kronctl.bash,_kronctl,kronctl.fish}`.
//!
//! The hand-written pages pam_kron(8) and otpd.toml(5) live in packaging/man/.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Sections the daemon's page needs beyond what clap knows: files, signals, exit status.
const OTPD_EXTRA: &str = include_str!("../../man/otpd.8.extra");
/// The NAME line of otpd(8).
const OTPD_ABOUT: &str = "the kron daemon: decides every two-factor login and owns all token state";
/// Sections kron-web(8) needs beyond what clap knows.
const WEB_EXTRA: &str = include_str!("../../man/kron-web.8.extra");
/// The NAME line of kron-web(8).
const WEB_ABOUT: &str = "the page behind kron's one-time enrollment links";
/// Files and cross references for kronctl(1).
const KRONCTL_EXTRA: &str = include_str!("../../man/kronctl.1.extra");

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: kron-packaging-gen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&PathBuf::from(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kron-packaging-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;

    let otpd = kron_common::daemon_args::OtpdArgs::command();
    // `#[command(about)]` on otpd's Args takes the crate description, which names kronctl too;
    // the NAME line of otpd(8) must describe the daemon alone.
    let otpd = otpd.about(OTPD_ABOUT);
    write_page(&man.join("otpd.8"), otpd, "8", OTPD_EXTRA)?;
    let web = kron_common::daemon_args::WebArgs::command().about(WEB_ABOUT);
    write_page(&man.join("kron-web.8"), web, "8", WEB_EXTRA)?;

    let kronctl = kronctl::cli::command();
    write_kronctl_pages(&man, kronctl.clone())?;

    for (shell, name) in [
        (Shell::Bash, "kronctl.bash"),
        (Shell::Zsh, "_kronctl"),
        (Shell::Fish, "kronctl.fish"),
    ] {
        let mut cmd = kronctl.clone();
        let mut file = fs::File::create(completions.join(name))?;
        clap_complete::generate(shell, &mut cmd, "kronctl", &mut file);
        file.flush()?;
    }
    Ok(())
}

/// kronctl(1) with the extra sections, plus `kronctl-SUBCOMMAND(1)` for each subcommand so
/// that every argument is documented (the main page only lists the subcommands).
fn write_kronctl_pages(man: &Path, kronctl: clap::Command) -> io::Result<()> {
    // As clap_mangen::generate_to does: no `help` subcommand, so no page is promised for it.
    let kronctl = kronctl.disable_help_subcommand(true);
    write_page(&man.join("kronctl.1"), kronctl.clone(), "1", KRONCTL_EXTRA)?;
    // `build()` propagates global arguments (--bus, --json) and the version to subcommands.
    let mut built = kronctl;
    built.build();
    for sub in built.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("kronctl-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(&name)
            .bin_name(format!("kronctl {}", sub.get_name()));
        write_page(&man.join(format!("{name}.1")), page, "1", "")?;
    }
    Ok(())
}

/// Renders clap's sections, the after-help text as real sections, then `extra` (raw roff)
/// before the version section.
fn write_page(path: &Path, cmd: clap::Command, section: &str, extra: &str) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("kron")
        .source(concat!("kron ", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        buf.extend_from_slice(after_help_sections(&after.to_string()).as_bytes());
    }
    buf.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut buf)?;
    fs::write(path, buf)
}

/// clap_mangen puts the after-help under one heading, "EXTRA". kron's after-help texts are
/// made of blocks headed `Examples:` and `Exit status:`; each becomes its own man section
/// (EXAMPLES, EXIT STATUS) with the body kept as written, since it is aligned by hand.
fn after_help_sections(text: &str) -> String {
    let mut roff = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let is_heading = !line.starts_with(' ') && line.ends_with(':');
        if is_heading {
            if in_block {
                roff.push_str(".fi\n");
            }
            let heading = line.trim_end_matches(':').to_uppercase();
            roff.push_str(&format!(".SH \"{heading}\"\n.nf\n"));
            in_block = true;
        } else {
            if !in_block {
                if line.trim().is_empty() {
                    continue;
                }
                roff.push_str(".SH NOTES\n.nf\n");
                in_block = true;
            }
            roff.push_str(&roff_literal(line));
            roff.push('\n');
        }
    }
    if in_block {
        roff.push_str(".fi\n");
    }
    roff
}

/// One line of text that roff must print as is.
fn roff_literal(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
