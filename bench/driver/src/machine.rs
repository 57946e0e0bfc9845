//! What the numbers were measured on: cores, CPU model, memory, and the disk under the
//! benchmark's directory (device, rotational flag, write cache, file system).

use serde_json::{Value, json};
use std::path::Path;

pub fn describe(dir: &Path) -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0);
    let (device, fs) = mount_of(dir);
    let block = device
        .rsplit('/')
        .next()
        .map(|name| {
            name.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_string()
        })
        .unwrap_or_default();
    let queue = format!("/sys/block/{block}/queue");
    json!({
        "kind": "machine",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "memory_mib": memory_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "device": device,
        "fs": fs,
        "rotational": read(&format!("{queue}/rotational")).trim(),
        "write_cache": read(&format!("{queue}/write_cache")).trim(),
        "loadavg": read("/proc/loadavg").split(' ').take(3).collect::<Vec<_>>().join(" "),
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The device and file system type of the longest mount point containing `dir`.
fn mount_of(dir: &Path) -> (String, String) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    read("/proc/self/mounts")
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (device, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), device.to_string(), fs.to_string()))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, device, fs)| (device, fs))
        .unwrap_or_default()
}
