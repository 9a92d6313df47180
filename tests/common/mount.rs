//! A real `adlsfs mount` process for tests: mounted through /dev/fuse on a fresh empty
//! directory, unmounted (SIGTERM, then a lazy fusermount3 -u as a fallback) on drop.

use super::adlsfs_bin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Mount {
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Mount {
    /// Mounts `location` with the cache in `cache_dir`, the daemon's credentials from the
    /// variables `credentials`; `extra` are further CLI arguments, `env` further variables.
    pub fn start(
        credentials: &[(String, String)],
        location: &str,
        cache_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let (dir, mountpoint, log) = Self::dirs();
        let mut cmd = Command::new(adlsfs_bin());
        cmd.arg("mount")
            .arg(location)
            .arg(&mountpoint)
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--foreground")
            .args(extra)
            .envs(credentials.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied());
        Self::spawn(cmd, dir, log)
    }

    /// Mounts `location` in the form mount(8) and fstab run a `fuse.adlsfs` helper with:
    /// `adlsfs <source> <mountpoint> -o <options>` (`options` should hold `foreground`,
    /// so the process stays the test's child, and `cache_dir=...`).
    pub fn start_mount_form(
        credentials: &[(String, String)],
        location: &str,
        options: &str,
    ) -> Self {
        let (dir, mountpoint, log) = Self::dirs();
        let mut cmd = Command::new(adlsfs_bin());
        cmd.arg(location)
            .arg(&mountpoint)
            .args(["-o", options])
            .envs(credentials.iter().map(|(k, v)| (k, v)));
        Self::spawn(cmd, dir, log)
    }

    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("adlsfs-mnt-")
            .tempdir()
            .unwrap();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let log = dir.path().join("mount.log");
        (dir, mountpoint, log)
    }

    /// Runs `cmd` (logging to `log`, debug level unless `RUST_LOG` is set on it) and waits
    /// for the mount to appear.
    fn spawn(mut cmd: Command, dir: tempfile::TempDir, log: PathBuf) -> Self {
        let mountpoint = dir.path().join("mnt");
        let log_file = std::fs::File::create(&log).unwrap();
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "adlsfs=debug");
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        super::die_with_parent(&mut cmd, libc::SIGTERM);
        let mut child = cmd.spawn().expect("spawning adlsfs mount");
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mounted(&mountpoint) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "adlsfs mount exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "mount did not appear in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            dir,
            log,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the daemon to unmount and exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILLs the daemon, as a node fault would; the mountpoint is left dead until drop.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL)
    }

    /// The daemon's counters, read with `adlsfs stats <mountpoint>`.
    pub fn metrics(&self) -> Metrics {
        let out = Command::new(adlsfs_bin())
            .arg("stats")
            .arg(self.path())
            .output()
            .expect("running adlsfs stats");
        Metrics(super::stdout(&out))
    }

    /// Waits until no download is in progress, and returns the counters then: reads are
    /// served while a file still arrives, and its verification, fsync and publication
    /// come after the last byte was read.
    pub fn settled_metrics(&self) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = self.metrics();
            if metrics.get(adlsfs::metrics::FETCHES_IN_FLIGHT) == 0.0 {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "downloads still in flight: {metrics}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mount stopped").id()
    }

    fn signal(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("mount already stopped");
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "adlsfs did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let mountpoint = self.path();
        if is_mounted(&mountpoint) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&mountpoint)
                .status();
        }
    }
}

/// A Prometheus text exposition of the daemon's counters (names in `adlsfs::metrics`).
pub struct Metrics(pub String);

impl Metrics {
    /// One sample, e.g. `get(CACHE_MISSES)`; panics, showing them all, when it is missing.
    pub fn get(&self, name_and_labels: &str) -> f64 {
        adlsfs::metrics::sample(&self.0, name_and_labels)
            .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{}", self.0))
    }

    /// A per-fetcher sample, e.g. `fetcher(FETCHES, "native")`.
    pub fn fetcher(&self, name: &str, fetcher: &str) -> f64 {
        self.get(&format!("{name}{{fetcher=\"{fetcher}\"}}"))
    }

    /// Failed fetches of one kind (`corrupt`, `changed`, `transient`, ...).
    pub fn failures(&self, kind: &str) -> f64 {
        self.get(&format!(
            "{}{{kind=\"{kind}\"}}",
            adlsfs::metrics::FETCH_FAILURES
        ))
    }

    /// The sum of a metric over all its labels.
    pub fn total(&self, name: &str) -> f64 {
        adlsfs::metrics::sum(&self.0, name)
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let target = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.as_ref()))
}
