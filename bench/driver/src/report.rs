//! The measured tables of docs/performance.md, written from the results file of one run, and
//! the data file of the latency plot. The prose around the tables is written by hand; only the
//! part between the markers is replaced.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::cli::Report;

const BEGIN: &str = "<!-- BEGIN bench/run output: generated, edits here are overwritten -->";
const END: &str = "<!-- END bench/run output -->";
const MODULES: [&str; 3] = ["kron", "google-authenticator", "pam_oath"];

pub fn write(args: &Report) -> Result<(), String> {
    let path = &args.record;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{path}: {e}")))
        .collect::<Result<_, _>>()?;
    let results = Results { records };
    let tables = results.tables(args.command.as_deref());
    match &args.doc {
        Some(doc) => splice(doc, &tables)?,
        None => print!("{tables}"),
    }
    if let Some(data) = &args.plot_data {
        std::fs::write(data, results.plot_data()).map_err(|e| format!("{data}: {e}"))?;
    }
    Ok(())
}

/// Replaces the generated part of `doc` (or appends it, or creates the file).
fn splice(doc: &str, tables: &str) -> Result<(), String> {
    let generated = format!("{BEGIN}\n{tables}{END}\n");
    let old = std::fs::read_to_string(doc).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!(
                "{}{generated}{}",
                &old[..begin],
                old[end + END.len()..].trim_start_matches('\n')
            )
        }
        _ if old.is_empty() => format!("# Performance\n\n{generated}"),
        _ => format!("{}\n{generated}", old.trim_end()),
    };
    std::fs::write(doc, new).map_err(|e| format!("{doc}: {e}"))
}

struct Results {
    records: Vec<Value>,
}

fn num(value: &Value, pointer: &str) -> Option<f64> {
    value.pointer(pointer).and_then(Value::as_f64)
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.2}"))
}

fn mib(kib_or_bytes: Option<f64>, divisor: f64) -> String {
    kib_or_bytes.map_or("–".into(), |v| format!("{:.1}", v / divisor))
}

fn users(size: u64) -> String {
    match size {
        s if s >= 1_000_000 && s % 1_000_000 == 0 => format!("{}M", s / 1_000_000),
        s if s >= 1000 && s % 1000 == 0 => format!("{}k", s / 1000),
        s => s.to_string(),
    }
}

impl Results {
    fn of_kind(&self, kind: &'static str) -> impl Iterator<Item = &Value> {
        self.records
            .iter()
            .filter(move |r| r.get("kind").and_then(Value::as_str) == Some(kind))
    }

    fn sizes(&self) -> Vec<u64> {
        self.of_kind("latency")
            .filter_map(|r| r.get("size").and_then(Value::as_u64))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn latency(&self, module: &str, size: u64) -> Option<&Value> {
        self.of_kind("latency").find(|r| {
            r.get("module").and_then(Value::as_str) == Some(module)
                && r.get("size").and_then(Value::as_u64) == Some(size)
        })
    }

    fn p50(&self, module: &str, size: u64) -> Option<f64> {
        self.latency(module, size)
            .and_then(|r| num(r, "/total/p50_ms"))
    }

    fn sized(&self, kind: &'static str, size: u64) -> Option<&Value> {
        self.of_kind(kind)
            .find(|r| r.get("size").and_then(Value::as_u64) == Some(size))
    }

    fn tables(&self, command: Option<&str>) -> String {
        let mut out = String::new();
        self.machine(&mut out, command);
        self.latency_table(&mut out);
        self.ratio_table(&mut out);
        self.breakdown_table(&mut out);
        self.load_table(&mut out);
        self.otpd_table(&mut out);
        self.migration_table(&mut out);
        self.targets_table(&mut out);
        out
    }

    fn machine(&self, out: &mut String, command: Option<&str>) {
        let Some(m) = self.of_kind("machine").next() else {
            return;
        };
        let text = |key: &str| {
            m.get(key)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let cache = match text("write_cache").as_str() {
            "write back" => "volatile write cache (flushes reach the device)".to_string(),
            other => format!("write cache: {other}"),
        };
        let end = self
            .of_kind("loadavg")
            .last()
            .and_then(|r| r.get("value").and_then(Value::as_str))
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "Measured by `{}` on {} cores ({}), {} MiB RAM, Linux {}; every store on {} ({}, \
             rotational={}, {cache}). Load average (1, 5, 15 min) {} at the start, {end} at \
             the end: the machine is shared, so other work competed for both cores.\n",
            command.unwrap_or("bench/run"),
            m.get("cores").and_then(Value::as_u64).unwrap_or(0),
            text("cpu"),
            m.get("memory_mib").and_then(Value::as_u64).unwrap_or(0),
            text("kernel"),
            text("device"),
            text("fs"),
            text("rotational"),
            text("loadavg"),
        );
    }

    fn latency_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### One login at a time (pam_start → pam_authenticate → pam_end, ms)\n\n\
             | users | module | logins | p50 | p99 | mean | p50 of pam_authenticate alone |\n\
             |---:|---|---:|---:|---:|---:|---:|"
        );
        for size in self.sizes() {
            for module in MODULES {
                let Some(r) = self.latency(module, size) else {
                    continue;
                };
                let planned = r.get("planned").and_then(Value::as_u64).unwrap_or(0);
                let count = num(r, "/total/count").unwrap_or(0.0) as u64;
                let logins = if count < planned {
                    format!("{count} (time budget)")
                } else {
                    count.to_string()
                };
                let _ = writeln!(
                    out,
                    "| {} | {module} | {logins} | {} | {} | {} | {} |",
                    users(size),
                    ms(num(r, "/total/p50_ms")),
                    ms(num(r, "/total/p99_ms")),
                    ms(num(r, "/total/mean_ms")),
                    ms(num(r, "/authenticate/p50_ms")),
                );
            }
        }
        out.push('\n');
    }

    fn ratio_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### kron relative to the others (below 1 = kron is faster)\n\n\
             | users | kron/GA p50 | kron/GA mean | kron/oath p50 | kron/oath mean |\n\
             |---:|---:|---:|---:|---:|"
        );
        for size in self.sizes() {
            let of = |module: &str, key: &str| {
                let kron = self
                    .latency("kron", size)
                    .and_then(|r| num(r, &format!("/total/{key}")))?;
                let other = self
                    .latency(module, size)
                    .and_then(|r| num(r, &format!("/total/{key}")))?;
                Some(kron / other)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                users(size),
                ratio(of("google-authenticator", "p50_ms")),
                ratio(of("google-authenticator", "mean_ms")),
                ratio(of("pam_oath", "p50_ms")),
                ratio(of("pam_oath", "mean_ms")),
            );
        }
        out.push('\n');
    }

    fn breakdown_table(&self, out: &mut String) {
        let sizes: BTreeSet<u64> = self
            .of_kind("breakdown")
            .filter_map(|r| r.get("size").and_then(Value::as_u64))
            .collect();
        if sizes.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "### Where a verification's time goes (one caller, kept D-Bus connection, p50 ms)\n\n\
             | users | Peer.Ping (bus round trip, answered by zbus) | Version property | \
             BeginLogin | Answer (code checked, step made durable) |\n|---:|---:|---:|---:|---:|"
        );
        for size in sizes {
            let call = |name: &str| {
                self.of_kind("breakdown")
                    .find(|r| {
                        r.get("size").and_then(Value::as_u64) == Some(size)
                            && r.get("call")
                                .and_then(Value::as_str)
                                .is_some_and(|c| c.starts_with(name))
                    })
                    .and_then(|r| num(r, "/latency/p50_ms"))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                users(size),
                ms(call("Peer.Ping")),
                ms(call("Version")),
                ms(call("BeginLogin")),
                ms(call("Answer")),
            );
        }
        out.push('\n');
    }

    fn load_table(&self, out: &mut String) {
        let Some(first) = self.of_kind("load").next() else {
            return;
        };
        let size = first.get("size").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "### Simultaneous callers against otpd ({} users enrolled)\n\n\
             *PAM login*: each caller is a thread running whole PAM logins through pam_kron (a new \
             D-Bus connection per login, as in production). *kept connection*: each caller keeps \
             one D-Bus connection and sends BeginLogin + Answer per login (otpd and the bus \
             without connection set-up).\n\n\
             CPU ms per login: CPU time each process used during the level divided by the \
             logins (callers = the driver with libpam and pam_kron in it).\n\n\
             | callers | caller | logins/s | p50 ms | p99 ms | failed | CPU ms/login: callers / \
             dbus-daemon / otpd |\n\
             |---:|---|---:|---:|---:|---:|---:|",
            users(size)
        );
        for r in self.of_kind("load") {
            let mode = match r.get("mode").and_then(Value::as_str) {
                Some("kept") => "kept connection",
                _ => "PAM login",
            };
            let cpu = |who: &str| {
                num(r, &format!("/cpu_ms_per_login/{who}"))
                    .map_or("–".into(), |v| format!("{v:.2}"))
            };
            let _ = writeln!(
                out,
                "| {} | {mode} | {:.0} | {} | {} | {} | {} / {} / {} |",
                r.get("callers").and_then(Value::as_u64).unwrap_or(0),
                num(r, "/per_sec").unwrap_or(0.0),
                ms(num(r, "/latency/p50_ms")),
                ms(num(r, "/latency/p99_ms")),
                match r.get("unconnected").and_then(Value::as_u64).unwrap_or(0) {
                    0 => r
                        .get("failed")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .to_string(),
                    n => format!(
                        "{} ({n} callers refused by the bus)",
                        r.get("failed").and_then(Value::as_u64).unwrap_or(0)
                    ),
                },
                cpu("callers"),
                cpu("dbus-daemon"),
                cpu("otpd"),
            );
        }
        out.push('\n');
    }

    fn otpd_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### otpd memory, store and start-up\n\n\
             RSS after the logins above (otpd restarted after enrolling); peak = VmHWM since \
             that restart; import peak = VmHWM of the otpd that took the `ImportTokens` calls.\n\n\
             | users | enrolment (ImportTokens) | start-up ms | RSS MiB | peak MiB | import peak MiB | \
             store on disk MiB | GA files MiB | oath file MiB |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for size in self.sizes() {
            let Some(r) = self.sized("otpd", size) else {
                continue;
            };
            let import = self.sized("import", size).map_or("–".to_string(), |i| {
                let users = num(i, "/users").unwrap_or(0.0);
                let seconds = num(i, "/seconds").unwrap_or(0.0);
                format!("{users:.0} in {seconds:.1} s")
            });
            let _ = writeln!(
                out,
                "| {} | {import} | {} | {} | {} | {} | {} | {} | {} |",
                users(size),
                ms(num(r, "/startup_ms")),
                mib(num(r, "/rss_kib"), 1024.0),
                mib(num(r, "/hwm_kib"), 1024.0),
                mib(num(r, "/import_hwm_kib"), 1024.0),
                mib(num(r, "/store_bytes"), 1048576.0),
                mib(num(r, "/ga_bytes"), 1048576.0),
                mib(num(r, "/oath_bytes"), 1048576.0),
            );
        }
        if let Some(r) = self.of_kind("otpd-after-load").next() {
            let _ = writeln!(
                out,
                "\nAfter the concurrency runs ({} users): RSS {} MiB, peak {} MiB.",
                users(r.get("size").and_then(Value::as_u64).unwrap_or(0)),
                mib(num(r, "/rss_kib"), 1024.0),
                mib(num(r, "/hwm_kib"), 1024.0),
            );
        }
        out.push('\n');
    }

    fn migration_table(&self, out: &mut String) {
        let Some(r) = self.of_kind("migration").next() else {
            return;
        };
        let users = num(r, "/users").unwrap_or(0.0);
        let seconds = num(r, "/seconds").unwrap_or(0.0);
        let _ = writeln!(
            out,
            "### Migration (issue 16)\n\n\
             `kronctl import --google-authenticator DIR` of {users:.0} users with {:.0} scratch \
             codes each, timed from the command to its report (target: under 60 s for 10,000 \
             users on this machine): **{seconds:.1} s**, {:.0} users/s; otpd's peak memory \
             {} MiB.\n",
            num(r, "/scratch_codes").unwrap_or(0.0),
            users / seconds.max(0.001),
            mib(num(r, "/migration_hwm_kib"), 1024.0),
        );
    }

    fn targets_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Targets (the login socket)\n\n| target | measured | met |\n|---|---|---|"
        );
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured in this run",
        };
        // kron p50 <= GA p50 at 1k, and within 1.2x of GA's at 1M.
        for (size, factor, label) in [
            (1000, 1.0, "≤ google-authenticator's at 1k users"),
            (
                1_000_000,
                1.2,
                "within 1.2 × google-authenticator's at 1M users",
            ),
        ] {
            let (k, g) = (
                self.p50("kron", size),
                self.p50("google-authenticator", size),
            );
            let _ = writeln!(
                out,
                "| kron p50 {label} | {} | {} |",
                match (k, g) {
                    (Some(k), Some(g)) =>
                        format!("{} ms vs {} ms: {:.2}×", ms(Some(k)), ms(Some(g)), k / g),
                    _ => "–".into(),
                },
                verdict(k.zip(g).map(|(k, g)| k <= factor * g)),
            );
        }
        // >= 6000/s through PAM with 64 callers, p99 < 10 ms, and no bus daemon CPU.
        let pam64 = self.of_kind("load").find(|r| {
            r.get("mode").and_then(Value::as_str) == Some("pam")
                && r.get("callers").and_then(Value::as_u64) == Some(64)
        });
        let rate = pam64.and_then(|r| num(r, "/per_sec"));
        let p99 = pam64.and_then(|r| num(r, "/latency/p99_ms"));
        let _ = writeln!(
            out,
            "| ≥ 6,000 PAM logins/s with 64 callers, p99 < 10 ms | {} | {} |",
            match (rate, p99) {
                (Some(rate), Some(p99)) => format!("{rate:.0}/s, p99 {} ms", ms(Some(p99))),
                _ => "–".into(),
            },
            verdict(
                rate.zip(p99)
                    .map(|(rate, p99)| rate >= 6000.0 && p99 < 10.0)
            ),
        );
        let bus_cpu = pam64.and_then(|r| num(r, "/cpu_ms_per_login/dbus-daemon"));
        let _ = writeln!(
            out,
            "| dbus-daemon CPU per PAM login: 0 | {} | {} |",
            bus_cpu.map_or("–".into(), |c| format!("{c:.3} ms")),
            verdict(bus_cpu.map(|c| c < 0.005)),
        );
        // RSS < 64 MiB at 1M.
        let peak = self
            .sized("otpd", 1_000_000)
            .and_then(|r| num(r, "/hwm_kib"))
            .map(|k| k / 1024.0);
        let _ = writeln!(
            out,
            "| otpd RSS < 64 MiB with 1M users enrolled (peak while serving) | {} | {} |",
            peak.map_or("–".into(), |p| format!("{p:.1} MiB")),
            verdict(peak.map(|p| p < 64.0)),
        );
        out.push('\n');
    }

    /// `users kron_p50 kron_p99 ga_p50 ga_p99 oath_p50 oath_p99` per size, NaN where missing.
    fn plot_data(&self) -> String {
        let mut out = String::from("# users kron_p50 kron_p99 ga_p50 ga_p99 oath_p50 oath_p99\n");
        for size in self.sizes() {
            let _ = write!(out, "{size}");
            for module in MODULES {
                for key in ["p50_ms", "p99_ms"] {
                    let value = self
                        .latency(module, size)
                        .and_then(|r| num(r, &format!("/total/{key}")));
                    let _ = write!(
                        out,
                        " {}",
                        value.map_or("NaN".into(), |v| format!("{v:.4}"))
                    );
                }
            }
            out.push('\n');
        }
        out
    }
}
