//! Measuring work in a child process of the bench itself, so its peak memory is its own:
//! the child prints one `RESULT ...` line, the parent reads its fields.

#![allow(dead_code)]

use std::process::Command;

/// Runs this bench binary again with `args` and returns the fields of its `RESULT` line.
pub fn run(args: &[&std::ffi::OsStr]) -> Vec<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "the bench's child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// The process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
