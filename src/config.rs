//! Validated, plain configuration structs, built from the CLI in one place (`cli.rs`) and
//! handed to the wiring (`app.rs`). Nothing here knows about clap.

use crate::cache::Bounds;
use crate::fetch::native::NativeConfig;
use crate::fetch::select::FetcherMode;
use crate::fs::FsConfig;
use crate::fuse::session::SessionConfig;
use crate::location::Location;
use crate::materialise::verify::VerifyPolicy;
use crate::storage::azure::{AzureConfig, AzureStore};
use crate::storage::{credentials, Result, RetryPolicy};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The node cache a command uses.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub bounds: Bounds,
}

/// How files are downloaded and verified (mount and prefetch).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub mode: FetcherMode,
    pub verify: VerifyPolicy,
    pub native: NativeConfig,
    /// The azcopy binary; `azcopy` on PATH when unset.
    pub azcopy_path: Option<PathBuf>,
    /// Smallest blob handed to azcopy (see [`crate::fetch::select`]).
    pub azcopy_min_size: Option<u64>,
    /// An azcopy job whose transferred bytes do not grow for this long is killed.
    pub azcopy_stall_timeout: Duration,
    /// cgroup v2 mount whose limits size azcopy.
    pub cgroup_root: PathBuf,
}

/// Everything a mount daemon runs with.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub location: Location,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub fetch: FetchConfig,
    pub fs: FsConfig,
    pub session: SessionConfig,
    /// Serve the counters over HTTP here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT, how long downloads in progress may finish.
    pub drain_timeout: Duration,
}

/// `adlsfs prefetch`.
#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    pub location: Location,
    /// Files, directories or globs relative to the location; all when empty.
    pub paths: Vec<String>,
    /// Files downloaded at once.
    pub parallel: usize,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub fetch: FetchConfig,
}

/// How to reach and authorise against storage (credentials themselves come from the
/// environment or the credentials file, never from here).
#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    pub endpoint: Option<Url>,
    pub credentials_file: Option<PathBuf>,
    pub anonymous: bool,
    pub retry: RetryPolicy,
}

impl StorageConfig {
    /// Resolves credentials and builds the store for `location`'s container.
    pub fn connect(&self, location: &Location) -> Result<AzureStore> {
        let vars = credentials::load_vars(self.credentials_file.as_deref())?;
        let access = credentials::resolve(&vars, self.anonymous)?;
        tracing::debug!(
            credential = access.credential.kind(),
            "resolved credentials"
        );
        AzureStore::new(AzureConfig::new(
            location,
            self.endpoint.clone(),
            access,
            self.retry,
        )?)
    }
}

/// The default node cache: `/var/cache/adlsfs` for root, else `$XDG_CACHE_HOME/adlsfs`
/// (`~/.cache/adlsfs`).
pub fn default_cache_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/adlsfs");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("adlsfs")
}

/// Parses a byte count with an optional K/M/G/T suffix (binary multiples), e.g. `8M`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix(['i']).unwrap_or(t);
    let (number, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512K, 8M, 10G"))?;
    Ok((value * (1u64 << shift) as f64) as u64)
}

/// Parses an octal permission mode like `0644` or `755`.
pub fn parse_mode(text: &str) -> std::result::Result<u16, String> {
    let mode = u16::from_str_radix(text.trim().trim_start_matches("0o"), 8)
        .map_err(|_| format!("{text:?} is not an octal mode like 0644"))?;
    if mode > 0o7777 {
        return Err(format!("mode {text:?} is out of range"));
    }
    Ok(mode)
}

/// Parses `500ms`, `30s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m or 2h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert!(parse_mode("0999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").is_err());
    }
}
