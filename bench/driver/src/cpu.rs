//! CPU time used by a process (utime + stime from /proc/PID/stat), to split the cost of a login
//! between the callers, otpd and the bus daemon.

use std::time::Duration;

/// CPU time of process `pid` so far; `None` if it cannot be read.
pub fn of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / per_second.max(1) as f64,
    ))
}

/// CPU time of this process.
pub fn own() -> Option<Duration> {
    of(std::process::id())
}

/// CPU of each named process over a measured interval.
#[derive(Debug)]
pub struct Meter {
    pids: Vec<(&'static str, u32, Option<Duration>)>,
}

impl Meter {
    /// Starts measuring this process ("callers") and the given ones.
    pub fn start(others: &[(&'static str, Option<u32>)]) -> Meter {
        let mut pids = vec![("callers", std::process::id(), own())];
        for &(name, pid) in others {
            if let Some(pid) = pid {
                pids.push((name, pid, of(pid)));
            }
        }
        Meter { pids }
    }

    /// CPU milliseconds each process used since `start`, per `count` operations.
    pub fn per_op_ms(&self, count: usize) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for &(name, pid, before) in &self.pids {
            if let (Some(before), Some(after)) = (before, of(pid)) {
                let ms = (after.saturating_sub(before)).as_secs_f64() * 1e3 / count.max(1) as f64;
                out.insert(name.to_string(), serde_json::json!(ms));
            }
        }
        serde_json::Value::Object(out)
    }
}
