//! The azcopy fetcher: one supervised `azcopy copy` per blob, at most one per node.
//!
//! - Invocation fixed by the design: `--from-to=BlobLocal` (azcopy cannot infer it for
//!   emulator URLs), `--check-md5=NoCheck` (adlsfs verifies itself; azcopy's MD5 pass
//!   throttles large downloads), `--output-type=json` (progress is parsed).
//! - The URL carries a read-only SAS for that one blob, expiring soon after the job's
//!   deadline; it is never logged (`sig=` is redacted everywhere).
//! - Environment: concurrency and buffer sized from the pod's limits ([`super::sizing`]);
//!   log and job-plan locations under the cache directory, so read-only homes work.
//! - Supervision: stdin is a pipe held open (at EOF azcopy spins a core); a job that makes
//!   no progress for the stall timeout, or outlives its deadline, is SIGKILLed (azcopy
//!   ignores SIGTERM while retrying); leftovers (`.azDownload-*`, plan files) are removed.
//! - A machine-wide file lock keeps azcopy runs one at a time across all processes.

use super::sizing::AzcopyEnv;
use super::{FetchError, FetchJob, FetchReport, Fetcher, FetcherKind, ProgressSink};
use crate::storage::{redact_sas, BlobMeta, ReadAccess, ReadUrlSigner};
use async_trait::async_trait;
use fs2::FileExt;
use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Lower bound of a job's deadline, plus time per byte at a pessimistic rate.
const DEADLINE_BASE: Duration = Duration::from_secs(300);
const DEADLINE_MIN_RATE: u64 = 5 << 20;
/// The SAS outlives the deadline by this much, then it is useless.
const SAS_GRACE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct AzcopyConfig {
    pub binary: PathBuf,
    /// The cache directory: logs, job plans and the machine lock live under it.
    pub cache_root: PathBuf,
    pub env: AzcopyEnv,
    /// A job whose transferred bytes do not grow for this long is killed.
    pub stall_timeout: Duration,
}

/// How a download may use the node's one azcopy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzcopyUse {
    /// Not at all: the native fetcher downloads it.
    Never,
    /// Only if no other azcopy job runs on the node right now.
    IfFree,
    /// Waiting for the node's azcopy lock as long as it takes.
    Wait,
}

/// What became of a request to download with azcopy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzcopyRun {
    /// azcopy downloaded the file.
    Fetched,
    /// azcopy did not run: another job held the node's azcopy ([`AzcopyUse::IfFree`]), or
    /// it was not to be used at all ([`AzcopyUse::Never`]). Nothing was written.
    NotRun,
}

#[derive(Debug, thiserror::Error)]
pub enum AzcopyError {
    #[error("could not start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("azcopy failed ({status}): {message}{log}")]
    Failed {
        status: String,
        message: String,
        log: String,
    },
    #[error("azcopy made no progress for {0:?} and was killed")]
    Stalled(Duration),
    #[error("azcopy did not finish within its deadline of {0:?} and was killed")]
    Deadline(Duration),
    #[error("azcopy reported success but wrote {actual} bytes, expected {expected}")]
    Incomplete { expected: u64, actual: u64 },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// One line of `--output-type=json` output.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "MessageType")]
    kind: String,
    #[serde(rename = "MessageContent", default)]
    content: String,
}

/// The payload of `Init`, `Progress` and `EndOfJob` messages (numbers come as strings).
#[derive(Debug, Default, Deserialize)]
struct JobSummary {
    #[serde(rename = "JobID", default)]
    job_id: String,
    #[serde(rename = "JobStatus", default)]
    status: String,
    #[serde(rename = "TotalBytesTransferred", default)]
    bytes: String,
    #[serde(rename = "TransfersFailed", default)]
    failed: String,
    #[serde(rename = "ErrorMsg", default)]
    error: String,
    #[serde(rename = "LogFileLocation", default)]
    log_file: String,
}

pub struct AzcopyFetcher {
    config: AzcopyConfig,
    signer: Arc<dyn ReadUrlSigner>,
}

impl AzcopyFetcher {
    pub fn new(config: AzcopyConfig, signer: Arc<dyn ReadUrlSigner>) -> Self {
        Self { config, signer }
    }

    fn lock_path(&self) -> PathBuf {
        self.config.cache_root.join("locks").join("azcopy.lock")
    }

    fn logs_dir(&self) -> PathBuf {
        self.config.cache_root.join("azcopy").join("logs")
    }

    fn plans_dir(&self) -> PathBuf {
        self.config.cache_root.join("azcopy").join("plans")
    }

    /// Takes the node's azcopy lock: waiting for it (in a blocking thread, no polling), or
    /// only if it is free right now (`None` when it is not).
    async fn lock_node(&self, wait: bool) -> Result<Option<File>, AzcopyError> {
        let path = self.lock_path();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| FetchError::io(dir, e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| FetchError::io(&path, e))?;
            if wait {
                file.lock_exclusive()
                    .map_err(|e| FetchError::io(&path, e))?;
            } else if file.try_lock_exclusive().is_err() {
                return Ok(None);
            }
            Ok(Some(file))
        })
        .await
        .expect("lock task panicked")
    }

    /// Downloads `meta` into `dest` with azcopy, holding the node's azcopy lock. With
    /// [`AzcopyUse::IfFree`], returns [`AzcopyRun::NotRun`] at once when another azcopy
    /// job runs on the node.
    pub async fn fetch_under_node_lock(
        &self,
        meta: &BlobMeta,
        dest: &Path,
        use_: AzcopyUse,
        progress: &dyn ProgressSink,
    ) -> Result<AzcopyRun, AzcopyError> {
        let wait = match use_ {
            AzcopyUse::Never => return Ok(AzcopyRun::NotRun),
            AzcopyUse::IfFree => false,
            AzcopyUse::Wait => true,
        };
        let Some(_node_lock) = self.lock_node(wait).await? else {
            return Ok(AzcopyRun::NotRun);
        };
        for dir in [self.logs_dir(), self.plans_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| FetchError::io(&dir, e))?;
        }
        let deadline = DEADLINE_BASE + Duration::from_secs(meta.size / DEADLINE_MIN_RATE);
        let access = self
            .signer
            .read_access(&meta.name, deadline + SAS_GRACE)
            .await
            .map_err(FetchError::Storage)?;
        let mut job = Job::default();
        let started = Instant::now();
        tracing::info!(blob = %meta.name, bytes = meta.size, "azcopy job started");
        let result = self
            .run(&access, meta, dest, deadline, &mut job, progress)
            .await;
        self.clean_up(dest, &job, result.is_ok());
        tracing::info!(
            blob = %meta.name,
            job = job.id.as_deref().unwrap_or("-"),
            status = job.end_status.as_deref().unwrap_or("none"),
            bytes = job.bytes,
            seconds = started.elapsed().as_secs_f64(),
            error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
            "azcopy job finished"
        );
        result?;
        let actual = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if actual != meta.size {
            return Err(AzcopyError::Incomplete {
                expected: meta.size,
                actual,
            });
        }
        Ok(AzcopyRun::Fetched)
    }

    async fn run(
        &self,
        access: &ReadAccess,
        meta: &BlobMeta,
        dest: &Path,
        deadline: Duration,
        job: &mut Job,
        progress: &dyn ProgressSink,
    ) -> Result<(), AzcopyError> {
        let mut command = tokio::process::Command::new(&self.config.binary);
        let url = match access {
            ReadAccess::Url(url) => url,
            ReadAccess::AutoLogin { url, login_type } => {
                command.env("AZCOPY_AUTO_LOGIN_TYPE", login_type);
                url
            }
        };
        command
            .arg("copy")
            .arg(url.as_str())
            .arg(dest)
            .args([
                "--from-to=BlobLocal",
                "--check-md5=NoCheck",
                "--output-type=json",
                "--overwrite=true",
            ])
            .envs(self.config.env.vars())
            .env("AZCOPY_LOG_LOCATION", self.logs_dir())
            .env("AZCOPY_JOB_PLAN_LOCATION", self.plans_dir())
            // A pipe held open: with stdin at end-of-file azcopy spins a full core.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| AzcopyError::Spawn {
            binary: self.config.binary.display().to_string(),
            source,
        })?;
        let _stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let started = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            let stall_left = self
                .config
                .stall_timeout
                .saturating_sub(last_progress.elapsed());
            let deadline_left = deadline.saturating_sub(started.elapsed());
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if job.observe(&line) {
                            last_progress = Instant::now();
                            progress.progress(&meta.name, job.bytes.min(meta.size), meta.size);
                        }
                    }
                    _ => break,
                },
                _ = tokio::time::sleep(stall_left.min(deadline_left)) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(if deadline_left <= stall_left {
                        AzcopyError::Deadline(deadline)
                    } else {
                        AzcopyError::Stalled(self.config.stall_timeout)
                    });
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| FetchError::io(&self.config.binary, e))?;
        let completed = job.end_status.as_deref() == Some("Completed") && job.failed == 0;
        if status.success() && completed {
            return Ok(());
        }
        let mut message = job.errors.join("; ");
        if message.is_empty() {
            if let Some(mut stderr) = stderr {
                use tokio::io::AsyncReadExt;
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text).await;
                message = text.lines().last().unwrap_or("").to_string();
            }
        }
        if message.is_empty() {
            message = format!(
                "job status {:?}",
                job.end_status.as_deref().unwrap_or("unknown")
            );
        }
        Err(AzcopyError::Failed {
            status: status.to_string(),
            message: redact_sas(&message),
            log: job
                .log_file
                .as_ref()
                .map(|p| format!(" (azcopy log: {p})"))
                .unwrap_or_default(),
        })
    }

    /// Removes what a job leaves behind: partial `.azDownload-*` files beside the
    /// destination and job-plan files (azcopy never deletes those); logs of successful
    /// jobs too, failed jobs keep theirs for diagnosis.
    fn clean_up(&self, dest: &Path, job: &Job, succeeded: bool) {
        let Some(id) = job.id.as_deref() else {
            return;
        };
        let mut doomed = Vec::new();
        if let Some(dir) = dest.parent() {
            doomed.extend(matching(dir, &format!(".azDownload-{id}")));
        }
        doomed.extend(matching(&self.plans_dir(), id));
        if succeeded {
            doomed.extend(matching(&self.logs_dir(), id));
        }
        for path in doomed {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::debug!(path = %path.display(), error = %e, "could not remove azcopy leftover");
            }
        }
    }
}

fn matching(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// What the JSON output said about the job so far.
#[derive(Debug, Default)]
struct Job {
    id: Option<String>,
    log_file: Option<String>,
    bytes: u64,
    end_status: Option<String>,
    failed: u64,
    errors: Vec<String>,
}

impl Job {
    /// Records one output line; true when it shows progress (more bytes, or the end).
    fn observe(&mut self, line: &str) -> bool {
        let Ok(message) = serde_json::from_str::<Message>(line) else {
            return false;
        };
        match message.kind.as_str() {
            "Init" | "Progress" | "EndOfJob" => {
                let summary: JobSummary =
                    serde_json::from_str(&message.content).unwrap_or_default();
                if !summary.job_id.is_empty() {
                    self.id = Some(summary.job_id.clone());
                }
                if !summary.log_file.is_empty() {
                    self.log_file = Some(summary.log_file.clone());
                }
                if !summary.error.is_empty() {
                    self.errors.push(summary.error.clone());
                }
                self.failed = summary.failed.parse().unwrap_or(self.failed);
                let bytes: u64 = summary.bytes.parse().unwrap_or(self.bytes);
                // A lower figure (out-of-order output) never moves progress backwards.
                let grew = bytes > self.bytes;
                self.bytes = self.bytes.max(bytes);
                if message.kind == "EndOfJob" {
                    self.end_status = Some(summary.status);
                    return true;
                }
                grew || message.kind == "Init"
            }
            "Error" => {
                let first = message
                    .content
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                self.errors.push(first.trim().to_string());
                false
            }
            _ => false,
        }
    }
}

impl AzcopyFetcher {
    /// [`AzcopyFetcher::fetch_under_node_lock`] for a [`FetchJob`]: the whole file is
    /// recorded as landed once azcopy is done (it writes in an order nobody sees).
    pub async fn fetch_job(
        &self,
        job: &FetchJob<'_>,
        use_: AzcopyUse,
    ) -> Result<AzcopyRun, AzcopyError> {
        let run = self
            .fetch_under_node_lock(job.meta, job.dest, use_, job.progress)
            .await?;
        if run == AzcopyRun::Fetched {
            job.landed.add(0..job.meta.size);
        }
        Ok(run)
    }
}

/// azcopy alone, waiting for the node's azcopy as long as it takes.
#[async_trait]
impl Fetcher for AzcopyFetcher {
    async fn fetch(&self, job: &FetchJob<'_>) -> Result<FetchReport, FetchError> {
        match self.fetch_job(job, AzcopyUse::Wait).await {
            Ok(_) => Ok(FetchReport {
                fetcher: FetcherKind::Azcopy,
                digests: None,
            }),
            Err(AzcopyError::Fetch(f)) => Err(f),
            Err(other) => Err(FetchError::Tool {
                tool: FetcherKind::Azcopy,
                message: other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_init_progress_end_and_errors() {
        let mut job = Job::default();
        let init = r#"{"MessageType":"Init","MessageContent":"{\"LogFileLocation\":\"/c/azcopy/logs/abc.log\",\"JobID\":\"abc\",\"IsCleanupJob\":false}"}"#;
        assert!(job.observe(init));
        assert_eq!(
            (job.id.as_deref(), job.log_file.as_deref()),
            (Some("abc"), Some("/c/azcopy/logs/abc.log"))
        );
        let progress = |bytes: u64| {
            format!(
                r#"{{"MessageType":"Progress","MessageContent":"{{\"JobStatus\":\"InProgress\",\"TotalBytesTransferred\":\"{bytes}\",\"TransfersFailed\":\"0\"}}"}}"#
            )
        };
        assert!(job.observe(&progress(100)));
        assert!(!job.observe(&progress(100)), "no new bytes is no progress");
        assert!(job.observe(&progress(200)));
        let end = r#"{"MessageType":"EndOfJob","MessageContent":"{\"JobStatus\":\"CompletedWithErrors\",\"TransfersFailed\":\"1\",\"ErrorMsg\":\"\"}"}"#;
        assert!(job.observe(end));
        assert_eq!(
            (job.end_status.as_deref(), job.failed),
            (Some("CompletedWithErrors"), 1)
        );
        let err = r#"{"MessageType":"Error","MessageContent":"Cannot perform copy due to error: 403\n-----\nmore"}"#;
        assert!(!job.observe(err));
        assert_eq!(job.errors, ["Cannot perform copy due to error: 403"]);
        assert!(!job.observe("not json at all"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_output_line_is_parsed_without_panicking(line in ".{0,300}") {
            Job::default().observe(&line);
        }

        #[test]
        fn progress_never_goes_backwards(bytes in proptest::collection::vec(0u64..1_000_000, 1..20)) {
            let mut job = Job::default();
            let mut high = 0;
            for b in bytes {
                let line = format!(r#"{{"MessageType":"Progress","MessageContent":"{{\"TotalBytesTransferred\":\"{b}\"}}"}}"#);
                let grew = job.observe(&line);
                prop_assert_eq!(grew, b > high);
                high = high.max(b);
            }
        }
    }
}
