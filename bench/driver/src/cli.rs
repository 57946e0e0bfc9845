//! The command line of `kron-bench`: clap definitions and the one check clap cannot express.
//! The names, spellings and defaults are the ones bench/run passes: change both together.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

/// Parses the process's command line. Usage errors exit here (status 2, clap's message), and
/// so does --help (status 0). Returns the subcommand's name too, for the error messages.
pub fn parse() -> (String, Command) {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses a command line, including the check clap's derive cannot express, so every usage
/// error comes from clap in one format.
pub fn parse_from<I, T>(args: I) -> Result<(String, Command), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = Command::command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let name = matches.subcommand_name().unwrap_or_default().to_string();
    let command = Command::from_arg_matches(&matches)?;
    if let Command::Load(load) = &command
        && load.kept_bus.is_none()
        && load.modes().contains(&Mode::Kept)
    {
        let load_cmd = cmd.find_subcommand_mut("load").expect("load is defined");
        return Err(load_cmd.error(
            ErrorKind::MissingRequiredArgument,
            "--modes kept needs --kept-bus ADDR, the bus otpd is on",
        ));
    }
    Ok((name, command))
}

/// kron benchmark driver: the steps behind bench/run
#[derive(Debug, Parser)]
#[command(name = "kron-bench")]
pub enum Command {
    /// Write google-authenticator secret files for users FROM..TO
    GenGa(GenGa),
    /// Write pam_oath's users file for users 0..USERS
    GenOath(GenOath),
    /// Write the makedb input of libnss-db's passwd.db for users 0..USERS
    GenNss(GenNss),
    /// Enroll users FROM..TO in kron through otpd's ImportTokens
    Import(Import),
    /// Wait for otpd's first answer on the bus; print the ms since --since-ns
    WaitReady(WaitReady),
    /// Sequential libpam logins of --count users of the population (shuffled)
    Latency(Latency),
    /// Concurrent logins through kron, one run per concurrency level and mode
    Load(Load),
    /// Receive (and drop) syslog datagrams until killed
    SyslogSink(SyslogSink),
    /// Time each D-Bus call of a login to otpd, one caller
    Breakdown(Breakdown),
    /// Record the cores, memory and disk of this machine
    Machine(Machine),
    /// Write the tables of docs/performance.md from a results file
    Report(Report),
}

#[derive(Debug, Args)]
pub struct GenGa {
    /// Directory of the secret files (one per user)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// First user index
    #[arg(long, value_name = "A")]
    pub from: u64,
    /// User index after the last one
    #[arg(long, value_name = "B")]
    pub to: u64,
    /// Scratch codes in each file
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub scratch_codes: u64,
}

#[derive(Debug, Args)]
pub struct GenOath {
    /// The users file to write
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Number of users
    #[arg(long, value_name = "N")]
    pub users: u64,
}

#[derive(Debug, Args)]
pub struct GenNss {
    /// The makedb input to write
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of users
    #[arg(long, value_name = "N")]
    pub users: u64,
}

#[derive(Debug, Args)]
pub struct Import {
    /// D-Bus address of the bus otpd is on
    #[arg(long, value_name = "ADDR")]
    pub bus: String,
    /// First user index
    #[arg(long, value_name = "A")]
    pub from: u64,
    /// User index after the last one
    #[arg(long, value_name = "B")]
    pub to: u64,
    /// Users per ImportTokens call
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub batch: u64,
    /// Calls in flight at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub parallel: usize,
    /// Results file to append the import time to
    #[arg(long, value_name = "FILE", requires = "size")]
    pub record: Option<String>,
    /// Population size the record is filed under
    #[arg(long, value_name = "N", requires = "record")]
    pub size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct WaitReady {
    /// D-Bus address of the bus otpd is on
    #[arg(long, value_name = "ADDR")]
    pub bus: String,
    /// When otpd was started, in ns since the Unix epoch (`date +%s%N`)
    #[arg(long, value_name = "NS")]
    pub since_ns: u128,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub limit_secs: u64,
}

#[derive(Debug, Args)]
pub struct Latency {
    /// Module name in the record: kron, google-authenticator or pam_oath
    #[arg(long, value_name = "M")]
    pub module: String,
    /// PAM service (file name in --confdir)
    #[arg(long, value_name = "S")]
    pub service: String,
    /// Directory of the PAM service files (pam_start_confdir)
    #[arg(long, value_name = "DIR")]
    pub confdir: String,
    /// Population size
    #[arg(long, value_name = "N")]
    pub users: u64,
    /// Logins (at most --users)
    #[arg(long, value_name = "C")]
    pub count: u64,
    /// Stop after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub budget_secs: u64,
    /// Start this far into the shuffled population
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub skip: u64,
    /// Seed of the shuffle
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// First wait for a fresh TOTP time step (users logged in already in this one)
    #[arg(long)]
    pub wait_step: bool,
    /// Results file to append to
    #[arg(long, value_name = "FILE")]
    pub record: String,
}

#[derive(Debug, Args)]
pub struct Load {
    /// PAM service (file name in --confdir) of the "pam" mode; several, comma-separated, spread
    /// the callers evenly over them (one service per host of a fleet)
    #[arg(long, value_name = "S,...", value_delimiter = ',', required = true)]
    pub service: Vec<String>,
    /// Directory of the PAM service files (pam_start_confdir)
    #[arg(long, value_name = "DIR")]
    pub confdir: String,
    /// Population size
    #[arg(long, value_name = "N")]
    pub users: u64,
    /// Concurrent callers of each level, comma-separated (e.g. 1,8,64,256)
    #[arg(long, value_name = "N,...", value_delimiter = ',', required = true)]
    pub levels: Vec<usize>,
    /// Logins per level and mode (at most --users)
    #[arg(long, value_name = "C")]
    pub per_level: u64,
    /// Modes to run at each level, comma-separated [default: pam,kept with --kept-bus, else pam]
    ///
    /// Each mode takes its own --per-level users. kept needs --kept-bus.
    #[arg(long, value_name = "MODE,...", value_delimiter = ',')]
    pub modes: Option<Vec<Mode>>,
    /// Start this far into the shuffled population (the users `latency` took)
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub skip: u64,
    /// Seed of the shuffle (the same as `latency`'s)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Seconds per level and mode
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub budget_secs: u64,
    /// D-Bus address of the bus otpd is on, for the "kept" mode
    #[arg(long, value_name = "ADDR")]
    pub kept_bus: Option<String>,
    /// Fail if any login failed (else failures are only recorded)
    #[arg(long)]
    pub strict: bool,
    /// otpd's pid, to record its CPU time per login
    #[arg(long, value_name = "PID")]
    pub otpd_pid: Option<u32>,
    /// dbus-daemon's pid, to record its CPU time per login
    #[arg(long, value_name = "PID")]
    pub bus_pid: Option<u32>,
    /// Results file to append to
    #[arg(long, value_name = "FILE")]
    pub record: String,
}

/// How `load` logs a user in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// pam_start, pam_authenticate and pam_end through pam_kron
    Pam,
    /// BeginLogin and Answer straight to otpd, on one kept connection per caller
    Kept,
}

impl Mode {
    /// The name in the records and in bench/run's output.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pam => "pam",
            Mode::Kept => "kept",
        }
    }
}

impl Load {
    /// The modes to run: --modes, else every mode the given options allow.
    pub fn modes(&self) -> Vec<Mode> {
        match (&self.modes, &self.kept_bus) {
            (Some(modes), _) => modes.clone(),
            (None, Some(_)) => vec![Mode::Pam, Mode::Kept],
            (None, None) => vec![Mode::Pam],
        }
    }
}

#[derive(Debug, Args)]
pub struct SyslogSink {
    /// Path of the datagram socket to create (replaced if it exists)
    #[arg(long, value_name = "PATH")]
    pub socket: String,
}

#[derive(Debug, Args)]
pub struct Breakdown {
    /// D-Bus address of the bus otpd is on
    #[arg(long, value_name = "ADDR")]
    pub bus: String,
    /// Population size
    #[arg(long, value_name = "N")]
    pub users: u64,
    /// Users to verify, once each (at most --users)
    #[arg(long, value_name = "C")]
    pub count: u64,
    /// Start this far into the shuffled population
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub skip: u64,
    /// Seed of the shuffle
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Results file to append to
    #[arg(long, value_name = "FILE")]
    pub record: String,
}

#[derive(Debug, Args)]
pub struct Machine {
    /// Directory whose file system is described
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Results file to append to
    #[arg(long, value_name = "FILE")]
    pub record: String,
}

#[derive(Debug, Args)]
pub struct Report {
    /// Results file to read
    #[arg(long, value_name = "FILE")]
    pub record: String,
    /// Markdown file whose generated part is replaced (default: print the tables)
    #[arg(long, value_name = "FILE")]
    pub doc: Option<String>,
    /// Data file of the latency plot to write
    #[arg(long, value_name = "FILE")]
    pub plot_data: Option<String>,
    /// The command named in the tables as the one that measured them [default: bench/run]
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<(String, Command), clap::Error> {
        parse_from(std::iter::once("kron-bench").chain(line.split_whitespace()))
    }

    fn load(line: &str) -> Load {
        match parse(&format!(
            "load --service s --confdir d --users 9 --per-level 3 --record r {line}"
        )) {
            Ok((_, Command::Load(load))) => load,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn definitions_are_consistent() {
        Command::command().debug_assert();
    }

    /// Every command line bench/run writes, with its spellings.
    #[test]
    fn bench_run_lines_parse() {
        for line in [
            "syslog-sink --socket /run/syslog",
            "wait-ready --bus unix:path=/b --since-ns 1700000000000000000",
            "machine --dir /w --record /w/r",
            "gen-nss --out /w/p --users 400",
            "gen-ga --dir /w/ga --from 0 --to 400",
            "gen-oath --file /w/u --users 400",
            "import --bus unix:path=/b --from 0 --to 400 --record /w/r --size 400",
            "latency --module kron --service kb-kron --count 40 --wait-step --confdir /w/pam \
             --users 400 --record /w/r",
            "latency --module pam_oath --service kb-oath --count 40 --budget-secs 10 \
             --confdir /w/pam --users 400 --record /w/r",
            "breakdown --bus unix:path=/b --users 400 --skip 40 --count 20 --record /w/r",
            "load --service kb-kron --confdir /w/pam --users 400 --skip 60 --levels 1,8 \
             --per-level 60 --budget-secs 10 --kept-bus unix:path=/b --otpd-pid 7 \
             --bus-pid 8 --record /w/r --strict",
            "report --record /w/r --command bench/run --doc d.md --plot-data /w/l.dat",
        ] {
            let (name, _) = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(line.starts_with(&name), "{line}");
        }
    }

    #[test]
    fn defaults() {
        let Ok((_, Command::Import(import))) = parse("import --bus b --from 0 --to 1") else {
            panic!("import");
        };
        assert_eq!((import.batch, import.parallel), (10_000, 8));
        let Ok((_, Command::WaitReady(wait))) = parse("wait-ready --bus b --since-ns 1") else {
            panic!("wait-ready");
        };
        assert_eq!(wait.limit_secs, 900);
        let line = "latency --module m --service s --confdir d --users 9 --count 3 --record r";
        let Ok((_, Command::Latency(latency))) = parse(line) else {
            panic!("latency");
        };
        let got = (
            latency.budget_secs,
            latency.skip,
            latency.seed,
            latency.wait_step,
        );
        assert_eq!(got, (600, 0, 1, false));
        let load = load("--levels 1,8,64");
        assert_eq!(load.levels, [1, 8, 64]);
        assert_eq!((load.budget_secs, load.skip, load.seed), (20, 0, 1));
        assert!(!load.strict);
    }

    #[test]
    fn load_modes() {
        assert_eq!(load("--levels 1").modes(), [Mode::Pam]);
        assert_eq!(
            load("--levels 1 --kept-bus b").modes(),
            [Mode::Pam, Mode::Kept]
        );
        assert_eq!(
            load("--levels 1 --kept-bus b --modes kept").modes(),
            [Mode::Kept]
        );
        assert_eq!(
            load("--levels 1 --kept-bus b --modes pam").modes(),
            [Mode::Pam]
        );
    }

    #[test]
    fn usage_errors() {
        let base = "load --service s --confdir d --users 9 --per-level 3 --record r --levels 1";
        let err = parse(&format!("{base} --modes pam,kept")).expect_err("no --kept-bus");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--kept-bus"), "{err}");
        for bad in [
            format!("{base} --modes fast"),
            format!("{base},x"),
            "load --service s --confdir d --users 9 --per-level 3 --record r".into(),
            "import --bus b --from 0 --to 1 --record r".into(),
            "bogus".into(),
            String::new(),
        ] {
            let err = parse(&bad).expect_err(&bad);
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
