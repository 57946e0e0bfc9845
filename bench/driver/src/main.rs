//! kron-bench: the driver behind `bench/run`. It writes each module's enrolled state, enrolls
//! kron through otpd's `ImportTokens`, runs real libpam logins (one process, pam_start /
//! pam_authenticate / pam_end per login) and appends one JSON record per measurement to a
//! results file, from which `report` writes the tables in docs/performance.md.

mod args;
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
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use args::Args;
use serde_json::json;

const USAGE: &str = "\
usage: kron-bench COMMAND [--key value]...
  gen-ga      --dir D --from A --to B          google-authenticator files for users A..B
  gen-oath    --file F --users N               pam_oath users file for users 0..N
  gen-nss     --out F --users N                makedb input (libnss-db passwd.db)
  import      --bus ADDR --from A --to B [--batch 10000] [--parallel 8] [--record F --size N]
  wait-ready  --bus ADDR --since-ns NS [--limit-secs 900]   prints ms from NS to first answer
  latency     --module M --service S --confdir D --users N --count C [--budget-secs T]
              [--skip K] [--wait-step] --record F   sequential logins of C users (shuffled)
  load        --service S --confdir D --users N --levels 1,8,64,256 --per-level C
              [--skip K] [--budget-secs T] [--kept-bus ADDR] [--strict] --record F
              [--otpd-pid P --bus-pid P]       (CPU per login of otpd and dbus-daemon)
  syslog-sink --socket PATH                    receives (and drops) syslog datagrams until killed
  breakdown   --bus ADDR --users N --count C [--skip K] --record F   per-call latency
  machine     --dir D --record F               cores, memory, disk of D
  report      --record F [--doc docs/performance.md] [--plot-data F]
";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = Args::parse(argv).and_then(|args| run(&command, &args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kron-bench {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &str, args: &Args) -> Result<(), String> {
    match command {
        "gen-ga" => enroll::ga(
            Path::new(&args.string("dir")?),
            args.number("from")?,
            args.number("to")?,
        ),
        "gen-oath" => enroll::oath(Path::new(&args.string("file")?), args.number("users")?),
        "gen-nss" => enroll::nss(Path::new(&args.string("out")?), args.number("users")?),
        "import" => import(args),
        "wait-ready" => {
            let since: u128 = args.string("since-ns")?.parse().map_err(|_| "--since-ns")?;
            let limit = Duration::from_secs(args.number_or("limit-secs", 900)?);
            let took = otpd::wait_ready(&args.string("bus")?, since, limit)?;
            println!("{:.1}", took.as_secs_f64() * 1e3);
            Ok(())
        }
        "latency" => latency(args),
        "load" => load(args),
        "breakdown" => breakdown(args),
        "syslog-sink" => syslog_sink(&args.string("socket")?),
        "machine" => append(
            &args.string("record")?,
            &machine::describe(Path::new(&args.string("dir")?)),
        ),
        "report" => report::write(args),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn import(args: &Args) -> Result<(), String> {
    let (from, to) = (args.number("from")?, args.number("to")?);
    let started = Instant::now();
    let imported = otpd::import(
        &args.string("bus")?,
        from,
        to,
        args.number_or("batch", 10_000)?,
        usize::try_from(args.number_or("parallel", 8)?).map_err(|_| "--parallel")?,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if imported != to - from {
        return Err(format!("otpd imported {imported} of {} users", to - from));
    }
    eprintln!(
        "kron-bench: imported {imported} users in {seconds:.1} s ({:.0}/s)",
        imported as f64 / seconds
    );
    if let Some(record) = args.optional("record") {
        append(
            &record,
            &json!({"kind": "import", "size": args.number("size")?, "users": imported,
                    "seconds": seconds}),
        )?;
    }
    Ok(())
}

fn latency(args: &Args) -> Result<(), String> {
    oath::init()?;
    let module = args.string("module")?;
    let users = args.number("users")?;
    let count = args.number("count")?.min(users);
    let budget = Duration::from_secs(args.number_or("budget-secs", 600)?);
    let service = pam::Service::new(&args.string("service")?, &args.string("confdir")?)?;
    let order = population::shuffled(users, args.number_or("seed", 1)?);
    let skip = (args.number_or("skip", 0)?.min(users - count)) as usize;
    if args.flag("wait-step") {
        logins::wait_for_next_step();
    }
    let run = logins::sequential(&service, &order[skip..skip + count as usize], budget);
    report_failures(&module, &run);
    let total = run.summary();
    let authenticate = stats::Summary::of(&run.authenticate);
    eprintln!(
        "kron-bench: {module} @{users}: {} logins, p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms, {} failed",
        total.count, total.p50_ms, total.p99_ms, total.mean_ms, run.failed
    );
    append(
        &args.string("record")?,
        &json!({"kind": "latency", "module": module, "size": users, "planned": count,
                "failed": run.failed, "seconds": run.elapsed.as_secs_f64(),
                "total": total, "authenticate": authenticate}),
    )?;
    if run.failed > 0 {
        return Err(format!("{} of the {module} logins failed", run.failed));
    }
    Ok(())
}

fn load(args: &Args) -> Result<(), String> {
    oath::init()?;
    let users = args.number("users")?;
    let per_level = args.number("per-level")?.min(users) as usize;
    let budget = Duration::from_secs(args.number_or("budget-secs", 20)?);
    let levels = args.list("levels")?;
    let kept_bus = args.optional("kept-bus");
    let pid = |key: &str| args.optional(key).and_then(|p| p.parse::<u32>().ok());
    let watched = [("otpd", pid("otpd-pid")), ("dbus-daemon", pid("bus-pid"))];
    let service = Arc::new(pam::Service::new(
        &args.string("service")?,
        &args.string("confdir")?,
    )?);
    // The same order as `latency`: its first `--skip` users logged in during this time step
    // already, so the first level starts after them.
    let order = population::shuffled(users, args.number_or("seed", 1)?);
    let record = args.string("record")?;
    // Every user logs in at most once per time step; when the population runs out, wait for the
    // next step and start over.
    let mut cursor = usize::try_from(args.number_or("skip", 0)?)
        .map_err(|_| "--skip")?
        .min(order.len());
    let mut failed_total = 0;
    for &callers in &levels {
        let modes: &[&str] = if kept_bus.is_some() {
            &["pam", "kept"]
        } else {
            &["pam"]
        };
        for &mode in modes {
            if cursor + per_level > order.len() {
                logins::wait_for_next_step();
                cursor = 0;
            }
            let slice = &order[cursor..cursor + per_level];
            let callers = usize::try_from(callers).map_err(|_| "--levels")?;
            let meter = cpu::Meter::start(&watched);
            let (summary, failed, elapsed, used, unconnected) = if mode == "pam" {
                let run = logins::concurrent(&service, slice, callers, budget);
                report_failures("kron", &run);
                let used = run.total.len() + run.failed as usize;
                (run.summary(), run.failed, run.elapsed, used, 0)
            } else {
                let bus = kept_bus.as_deref().unwrap_or_default();
                let (summary, failed, elapsed, unconnected) =
                    otpd::kept_connection_load(bus, slice, callers, budget)?;
                (
                    summary,
                    failed,
                    elapsed,
                    summary.count + failed as usize,
                    unconnected,
                )
            };
            let cpu_ms = meter.per_op_ms(summary.count + failed as usize);
            // Threads that stopped on the budget may have claimed a few slots more.
            cursor += per_level.min(used + callers);
            let rate = summary.count as f64 / elapsed.as_secs_f64();
            eprintln!(
                "kron-bench: {mode} callers {callers}: {} ok, {failed} failed, {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, CPU ms/login {cpu_ms}",
                summary.count, summary.p50_ms, summary.p99_ms
            );
            failed_total += failed + unconnected;
            append(
                &record,
                &json!({"kind": "load", "mode": mode, "size": users, "callers": callers,
                        "ok": summary.count, "failed": failed, "unconnected": unconnected,
                        "seconds": elapsed.as_secs_f64(), "per_sec": rate,
                        "latency": summary, "cpu_ms_per_login": cpu_ms}),
            )?;
        }
    }
    if failed_total > 0 {
        eprintln!("kron-bench: {failed_total} logins failed under load (recorded)");
        if args.flag("strict") {
            return Err(format!("{failed_total} logins failed under load"));
        }
    }
    Ok(())
}

fn breakdown(args: &Args) -> Result<(), String> {
    oath::init()?;
    let users = args.number("users")?;
    let order = population::shuffled(users, args.number_or("seed", 1)?);
    let mut skip = (args.number_or("skip", 0)? as usize).min(order.len());
    let wanted = (args.number("count")? as usize).min(order.len());
    if order.len() - skip < wanted {
        // Everyone logged in during this time step already (a small population).
        logins::wait_for_next_step();
        skip = 0;
    }
    let parts = otpd::breakdown(&args.string("bus")?, &order[skip..skip + wanted])?;
    for (call, summary) in &parts {
        eprintln!(
            "kron-bench: {call}: p50 {:.3} ms, p99 {:.3} ms",
            summary.p50_ms, summary.p99_ms
        );
        append(
            &args.string("record")?,
            &json!({"kind": "breakdown", "size": users, "call": call, "latency": summary}),
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
