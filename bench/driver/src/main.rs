//! kron-bench: the driver behind `bench/run`. It writes each module's enrolled state, enrolls
//! kron through otpd's `ImportTokens`, runs real libpam logins (one process, pam_start /
//! pam_authenticate / pam_end per login) and appends one JSON record per measurement to a
//! results file, from which `report` writes the tables in docs/performance.md.

mod cli;
mod cpu;
mod enroll;
mod logins;
mod machine;
mod oath;
mod otpd;
mod pam;
mod population;
mod report;
mod stats;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{Command, Mode};
use serde_json::json;

fn main() -> ExitCode {
    // The subcommand's name prefixes every error after parsing, as bench/run's log shows them.
    let (name, command) = cli::parse();
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kron-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::GenGa(args) => enroll::ga(&args.dir, args.from, args.to, args.scratch_codes),
        Command::GenOath(args) => enroll::oath(&args.file, args.users),
        Command::GenNss(args) => enroll::nss(&args.out, args.users),
        Command::Import(args) => import(&args),
        Command::WaitReady(args) => wait_ready(&args),
        Command::Latency(args) => latency(&args),
        Command::Load(args) => load(&args),
        Command::SyslogSink(args) => syslog_sink(&args.socket),
        Command::Breakdown(args) => breakdown(&args),
        Command::Machine(args) => append(&args.record, &machine::describe(&args.dir)),
        Command::Report(args) => report::write(&args),
    }
}

fn import(args: &cli::Import) -> Result<(), String> {
    let (from, to) = (args.from, args.to);
    let started = Instant::now();
    let imported = otpd::import(&args.bus, from, to, args.batch, args.parallel)?;
    let seconds = started.elapsed().as_secs_f64();
    if imported != to - from {
        return Err(format!("otpd imported {imported} of {} users", to - from));
    }
    eprintln!(
        "kron-bench: imported {imported} users in {seconds:.1} s ({:.0}/s)",
        imported as f64 / seconds
    );
    // clap makes --record and --size come together.
    if let (Some(record), Some(size)) = (&args.record, args.size) {
        append(
            record,
            &json!({"kind": "import", "size": size, "users": imported, "seconds": seconds}),
        )?;
    }
    Ok(())
}

fn wait_ready(args: &cli::WaitReady) -> Result<(), String> {
    let limit = Duration::from_secs(args.limit_secs);
    let took = otpd::wait_ready(&args.bus, args.since_ns, limit)?;
    println!("{:.1}", took.as_secs_f64() * 1e3);
    Ok(())
}

fn latency(args: &cli::Latency) -> Result<(), String> {
    oath::init()?;
    let (module, users) = (&args.module, args.users);
    let count = args.count.min(users);
    let budget = Duration::from_secs(args.budget_secs);
    let service = pam::Service::new(&args.service, &args.confdir)?;
    let order = population::shuffled(users, args.seed);
    let skip = (args.skip.min(users - count)) as usize;
    if args.wait_step {
        logins::wait_for_next_step();
    }
    let run = logins::sequential(&service, &order[skip..skip + count as usize], budget);
    report_failures(module, &run);
    let total = run.summary();
    let authenticate = stats::Summary::of(&run.authenticate);
    eprintln!(
        "kron-bench: {module} @{users}: {} logins, p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms, {} failed",
        total.count, total.p50_ms, total.p99_ms, total.mean_ms, run.failed
    );
    append(
        &args.record,
        &json!({"kind": "latency", "module": module, "size": users, "planned": count,
                "failed": run.failed, "seconds": run.elapsed.as_secs_f64(),
                "total": total, "authenticate": authenticate}),
    )?;
    if run.failed > 0 {
        return Err(format!("{} of the {module} logins failed", run.failed));
    }
    Ok(())
}

/// One concurrency level in one mode, as measured.
struct Level {
    summary: stats::Summary,
    failed: u64,
    elapsed: Duration,
    /// Users taken from the population (accepted or not).
    used: usize,
    /// Callers that never got a connection (kept mode only).
    unconnected: u64,
}

fn load(args: &cli::Load) -> Result<(), String> {
    oath::init()?;
    let users = args.users;
    let per_level = args.per_level.min(users) as usize;
    let budget = Duration::from_secs(args.budget_secs);
    let watched = [("otpd", args.otpd_pid), ("dbus-daemon", args.bus_pid)];
    let services = args
        .service
        .iter()
        .map(|name| pam::Service::new(name, &args.confdir).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    // The same order as `latency`: its first `--skip` users logged in during this time step
    // already, so the first level starts after them.
    let order = population::shuffled(users, args.seed);
    // Every user logs in at most once per time step; when the population runs out, wait for the
    // next step and start over.
    let mut cursor = usize::try_from(args.skip)
        .map_err(|_| "--skip")?
        .min(order.len());
    let modes = args.modes();
    let mut failed_total = 0;
    for &callers in &args.levels {
        for &mode in &modes {
            if cursor + per_level > order.len() {
                logins::wait_for_next_step();
                cursor = 0;
            }
            let slice = &order[cursor..cursor + per_level];
            let meter = cpu::Meter::start(&watched);
            let level = match mode {
                Mode::Pam => pam_level(&services, slice, callers, budget),
                Mode::Kept => kept_level(args, slice, callers, budget)?,
            };
            let cpu_ms = meter.per_op_ms(level.summary.count + level.failed as usize);
            // Threads that stopped on the budget may have claimed a few slots more.
            cursor += per_level.min(level.used + callers);
            failed_total += level.failed + level.unconnected;
            record_level(args, mode, callers, &level, cpu_ms)?;
        }
    }
    if failed_total > 0 {
        eprintln!("kron-bench: {failed_total} logins failed under load (recorded)");
        if args.strict {
            return Err(format!("{failed_total} logins failed under load"));
        }
    }
    Ok(())
}

/// `callers` threads logging in through libpam and pam_kron.
fn pam_level(
    services: &[Arc<pam::Service>],
    users: &[u64],
    callers: usize,
    budget: Duration,
) -> Level {
    let run = logins::concurrent(services, users, callers, budget);
    report_failures("kron", &run);
    Level {
        summary: run.summary(),
        failed: run.failed,
        elapsed: run.elapsed,
        used: run.total.len() + run.failed as usize,
        unconnected: 0,
    }
}

/// `callers` kept D-Bus connections verifying straight with otpd.
fn kept_level(
    args: &cli::Load,
    users: &[u64],
    callers: usize,
    budget: Duration,
) -> Result<Level, String> {
    // cli::parse_from refuses `--modes kept` without --kept-bus already; no unwrap for that.
    let bus = args
        .kept_bus
        .as_deref()
        .ok_or("--modes kept needs --kept-bus ADDR")?;
    let (summary, failed, elapsed, unconnected) =
        otpd::kept_connection_load(bus, users, callers, budget)?;
    Ok(Level {
        summary,
        failed,
        elapsed,
        used: summary.count + failed as usize,
        unconnected,
    })
}

fn record_level(
    args: &cli::Load,
    mode: Mode,
    callers: usize,
    level: &Level,
    cpu_ms: serde_json::Value,
) -> Result<(), String> {
    let (summary, failed) = (&level.summary, level.failed);
    let rate = summary.count as f64 / level.elapsed.as_secs_f64();
    let mode = mode.name();
    eprintln!(
        "kron-bench: {mode} callers {callers}: {} ok, {failed} failed, {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, CPU ms/login {cpu_ms}",
        summary.count, summary.p50_ms, summary.p99_ms
    );
    append(
        &args.record,
        &json!({"kind": "load", "mode": mode, "size": args.users, "callers": callers,
                "ok": summary.count, "failed": failed, "unconnected": level.unconnected,
                "seconds": level.elapsed.as_secs_f64(), "per_sec": rate,
                "latency": summary, "cpu_ms_per_login": cpu_ms}),
    )
}

fn breakdown(args: &cli::Breakdown) -> Result<(), String> {
    oath::init()?;
    let order = population::shuffled(args.users, args.seed);
    let mut skip = (args.skip as usize).min(order.len());
    let wanted = (args.count as usize).min(order.len());
    if order.len() - skip < wanted {
        // Everyone logged in during this time step already (a small population).
        logins::wait_for_next_step();
        skip = 0;
    }
    let parts = otpd::breakdown(&args.bus, &order[skip..skip + wanted])?;
    for (call, summary) in &parts {
        eprintln!(
            "kron-bench: {call}: p50 {:.3} ms, p99 {:.3} ms",
            summary.p50_ms, summary.p99_ms
        );
        append(
            &args.record,
            &json!({"kind": "breakdown", "size": args.users, "call": call, "latency": summary}),
        )?;
    }
    Ok(())
}

/// A stand-in for the syslog daemon: otpd writes its audit lines to a real socket (one send per
/// line), as on a machine with rsyslog or journald, instead of failing to connect every time.
fn syslog_sink(path: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let socket =
        std::os::unix::net::UnixDatagram::bind(path).map_err(|e| format!("{path}: {e}"))?;
    let mut buffer = vec![0u8; 8192];
    loop {
        socket
            .recv(&mut buffer)
            .map_err(|e| format!("{path}: {e}"))?;
    }
}

fn report_failures(module: &str, run: &logins::Run) {
    for failure in &run.failures {
        eprintln!("kron-bench: {module} login failed: {failure}");
    }
}

/// Appends one JSON record (one line) to `path`.
fn append(path: &str, record: &serde_json::Value) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    writeln!(file, "{record}").map_err(|e| format!("{path}: {e}"))
}
