//! Engine configuration: where the data directory is, the environment variables that
//! choose the store and the memory tier, and how much memory the decoded-cache tier may
//! hold. Store URLs are `store::StoreUrl`.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Environment variable naming the data directory.
pub const HOME_ENV: &str = "QUARRY_HOME";
/// Environment variable naming the metadata store URL.
pub const STORE_ENV: &str = "QUARRY_STORE_URL";
/// Environment variable sizing the memory tier of decoded cache files.
pub const MEMORY_CACHE_ENV: &str = "QUARRY_MEMORY_CACHE";
/// Environment variable naming where the Parquet cache lives (`s3://bucket/prefix`).
pub const CACHE_URL_ENV: &str = "QUARRY_CACHE_URL";
/// Percent of the machine's memory the memory tier holds at most by default.
const DEFAULT_MEMORY_PERCENT: u64 = 25;

/// The data directory: `explicit` if given, else `$QUARRY_HOME`, else `~/.quarry`.
pub fn resolve_data_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .map(|home| home.join(".quarry"))
        .ok_or(Error::NoDataDir)
}

/// Parses a memory-tier size: a byte count with or without a unit (`4GiB`, `512MB`), a
/// percentage of the machine's memory (`25%`), or `0` to keep nothing decoded.
pub fn parse_memory_budget(text: &str) -> Result<u64> {
    let invalid = || Error::InvalidSetting {
        setting: "memory cache size",
        given: text.to_owned(),
        expected: "give a size such as 4GiB or 512MB, a share of memory such as 25%, or 0 to turn the memory cache off",
    };
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent.trim().parse().map_err(|_| invalid())?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(invalid());
        }
        return Ok((physical_memory() as f64 * percent / 100.0) as u64);
    }
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| invalid())
}

/// The default memory-tier size: a quarter of the machine's memory (or of the container's
/// limit, when it has one).
pub fn default_memory_budget() -> u64 {
    physical_memory() / 100 * DEFAULT_MEMORY_PERCENT
}

fn physical_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let total = system.total_memory();
    match system.cgroup_limits() {
        Some(limits) if limits.total_memory > 0 => total.min(limits.total_memory),
        _ => total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budgets_parse_sizes_and_shares() {
        assert_eq!(parse_memory_budget("0").unwrap(), 0);
        assert_eq!(parse_memory_budget("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_memory_budget("2 GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_memory_budget("100%").unwrap(), physical_memory());
        assert!(default_memory_budget() > 0);
        for bad in ["lots", "-1GB", "150%", "%", ""] {
            let msg = parse_memory_budget(bad).unwrap_err().to_string();
            assert!(
                msg.contains("memory cache size") && msg.contains("4GiB"),
                "{bad}: {msg}"
            );
        }
    }
}
