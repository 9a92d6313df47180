//! How hard azcopy may push: `AZCOPY_CONCURRENCY_VALUE` and `AZCOPY_BUFFER_GB` sized from
//! the limits the process really runs under (cgroup v2 `cpu.max` and `memory.max`, the
//! tightest along its cgroup path), falling back to the host's CPUs and memory where
//! unlimited. Values the user set in the environment win.

use std::path::{Path, PathBuf};

pub const CONCURRENCY_VAR: &str = "AZCOPY_CONCURRENCY_VALUE";
/// The name older tooling documents; azcopy ignores it, so it is copied to the real one.
pub const LEGACY_CONCURRENCY_VAR: &str = "AZCOPY_CONCURRENCY";
pub const BUFFER_VAR: &str = "AZCOPY_BUFFER_GB";

/// Connections per CPU. Measured on the development machine (docs/BENCHMARKS.md): 4 per
/// core saturates loopback without the scheduling overhead azcopy's default (16/core,
/// at least 32) costs on small pods.
const CONNECTIONS_PER_CPU: f64 = 4.0;
const MIN_CONCURRENCY: u32 = 4;
const MAX_CONCURRENCY: u32 = 128;
/// azcopy's buffer takes a quarter of the memory limit, within these bounds.
const BUFFER_SHARE: f64 = 0.25;
const MIN_BUFFER_GB: f64 = 0.25;
const MAX_BUFFER_GB: f64 = 4.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpus: f64,
    pub memory_bytes: u64,
    /// True where a cgroup set the value, false where the host's figure was used.
    pub cpus_from_cgroup: bool,
    pub memory_from_cgroup: bool,
}

/// The process's effective CPU and memory limits, read under `cgroup_root`
/// (normally `/sys/fs/cgroup`).
pub fn read_limits(cgroup_root: &Path) -> Limits {
    read_limits_for(cgroup_root, &own_cgroup())
}

/// The process's cgroup v2 path (`/` inside a container's cgroup namespace).
fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        })
        .unwrap_or_default()
}

/// The limits for the cgroup at `own` (a path like `/kubepods/pod1/ctr`) under `root`.
pub fn read_limits_for(cgroup_root: &Path, own: &str) -> Limits {
    let dirs = cgroup_dirs(cgroup_root, own);
    let cpus = dirs
        .iter()
        .filter_map(|d| parse_cpu_max(&std::fs::read_to_string(d.join("cpu.max")).ok()?))
        .reduce(f64::min);
    let memory = dirs
        .iter()
        .filter_map(|d| parse_memory_max(&std::fs::read_to_string(d.join("memory.max")).ok()?))
        .min();
    Limits {
        cpus: cpus.unwrap_or_else(host_cpus),
        memory_bytes: memory.unwrap_or_else(host_memory),
        cpus_from_cgroup: cpus.is_some(),
        memory_from_cgroup: memory.is_some(),
    }
}

/// The cgroup's directory and its ancestors up to the root, leaf first; just the root when
/// the path is not found under it.
fn cgroup_dirs(root: &Path, own: &str) -> Vec<PathBuf> {
    let mut dir = root.join(own.trim_start_matches('/'));
    if own.split('/').any(|s| s == "..") || !dir.is_dir() {
        dir = root.to_path_buf();
    }
    let mut dirs = vec![dir.clone()];
    while dir != root {
        match dir.parent() {
            Some(parent) if parent.starts_with(root) => {
                dir = parent.to_path_buf();
                dirs.push(dir.clone());
            }
            _ => break,
        }
    }
    dirs
}

/// `cpu.max` is `<quota> <period>` or `max <period>`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `memory.max` is a byte count or `max`.
fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let kb: u64 = l
                    .strip_prefix("MemTotal:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            })
        })
        .unwrap_or(1 << 30)
}

/// The azcopy environment for these limits, with the user's own settings kept.
#[derive(Debug, Clone, PartialEq)]
pub struct AzcopyEnv {
    pub concurrency: String,
    pub buffer_gb: String,
    /// Where each value came from, for the log line.
    pub concurrency_source: &'static str,
    pub buffer_source: &'static str,
}

impl AzcopyEnv {
    pub fn vars(&self) -> [(&'static str, &str); 2] {
        [
            (CONCURRENCY_VAR, &self.concurrency),
            (BUFFER_VAR, &self.buffer_gb),
        ]
    }
}

/// Sizes azcopy for `limits`; `user` looks up the user's environment.
pub fn azcopy_env(limits: &Limits, user: impl Fn(&str) -> Option<String>) -> AzcopyEnv {
    let (concurrency, concurrency_source) =
        match (user(CONCURRENCY_VAR), user(LEGACY_CONCURRENCY_VAR)) {
            (Some(v), _) => (v, "AZCOPY_CONCURRENCY_VALUE"),
            (None, Some(v)) => (v, "AZCOPY_CONCURRENCY"),
            (None, None) => {
                let n = (limits.cpus * CONNECTIONS_PER_CPU).round() as u32;
                (
                    n.clamp(MIN_CONCURRENCY, MAX_CONCURRENCY).to_string(),
                    "limits",
                )
            }
        };
    let (buffer_gb, buffer_source) = match user(BUFFER_VAR) {
        Some(v) => (v, "AZCOPY_BUFFER_GB"),
        None => {
            let gb = limits.memory_bytes as f64 / (1u64 << 30) as f64 * BUFFER_SHARE;
            (
                format!("{:.2}", gb.clamp(MIN_BUFFER_GB, MAX_BUFFER_GB)),
                "limits",
            )
        }
    };
    AzcopyEnv {
        concurrency,
        buffer_gb,
        concurrency_source,
        buffer_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(cpu: &str, memory: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.max"), cpu).unwrap();
        std::fs::write(dir.path().join("memory.max"), memory).unwrap();
        dir
    }

    #[test]
    fn pod_limits_come_from_cgroup_files() {
        let dir = cgroup("250000 100000\n", "4294967296\n");
        let limits = read_limits(dir.path());
        assert_eq!(limits.cpus, 2.5);
        assert_eq!(limits.memory_bytes, 4 << 30);
        assert!(limits.cpus_from_cgroup && limits.memory_from_cgroup);
        let env = azcopy_env(&limits, |_| None);
        assert_eq!(
            (env.concurrency.as_str(), env.buffer_gb.as_str()),
            ("10", "1.00")
        );
    }

    #[test]
    fn unlimited_falls_back_to_the_host() {
        let dir = cgroup("max 100000\n", "max\n");
        let limits = read_limits(dir.path());
        assert!(!limits.cpus_from_cgroup && !limits.memory_from_cgroup);
        assert_eq!(limits.cpus, host_cpus());
        assert_eq!(limits.memory_bytes, host_memory());
        let missing = read_limits(Path::new("/nonexistent/cgroup"));
        assert_eq!(missing.cpus, host_cpus());
    }

    #[test]
    fn the_tightest_limit_on_the_path_wins() {
        let root = cgroup("max 100000", "max");
        let pod = root.path().join("kubepods/pod1");
        let ctr = pod.join("ctr");
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::write(pod.join("cpu.max"), "50000 100000").unwrap();
        std::fs::write(pod.join("memory.max"), "8589934592").unwrap();
        std::fs::write(ctr.join("cpu.max"), "max 100000").unwrap();
        std::fs::write(ctr.join("memory.max"), "268435456").unwrap();
        let limits = read_limits_for(root.path(), "/kubepods/pod1/ctr");
        assert_eq!((limits.cpus, limits.memory_bytes), (0.5, 256 << 20));
        let env = azcopy_env(&limits, |_| None);
        assert_eq!(env.concurrency, "4", "a floor keeps tiny pods usable");
        assert_eq!(env.buffer_gb, "0.25");
        // A path that is not under the root reads the root's own files.
        let escaped = read_limits_for(root.path(), "/../../etc");
        assert!(!escaped.cpus_from_cgroup);
    }

    #[test]
    fn user_settings_win_and_the_legacy_name_is_honoured() {
        let limits = Limits {
            cpus: 16.0,
            memory_bytes: 64 << 30,
            cpus_from_cgroup: false,
            memory_from_cgroup: false,
        };
        let computed = azcopy_env(&limits, |_| None);
        assert_eq!(
            (computed.concurrency.as_str(), computed.buffer_gb.as_str()),
            ("64", "4.00")
        );
        let legacy = azcopy_env(&limits, |k| {
            (k == LEGACY_CONCURRENCY_VAR).then(|| "12".into())
        });
        assert_eq!(
            (legacy.concurrency.as_str(), legacy.concurrency_source),
            ("12", "AZCOPY_CONCURRENCY")
        );
        let both = azcopy_env(&limits, |k| match k {
            CONCURRENCY_VAR => Some("7".into()),
            LEGACY_CONCURRENCY_VAR => Some("12".into()),
            BUFFER_VAR => Some("0.5".into()),
            _ => None,
        });
        assert_eq!(
            (both.concurrency.as_str(), both.buffer_gb.as_str()),
            ("7", "0.5")
        );
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_memory_max("max"), None);
        assert_eq!(parse_memory_max("1024\n"), Some(1024));
    }
}
