//! Fetchers download one blob version, whole, into a local temporary file, recording which
//! byte ranges have landed ([`landed`]) and, where they see the bytes, hashing as they go.
//! They never verify or publish: [`crate::materialise`] does. The native fetcher and azcopy
//! sit behind the same trait; [`select`] picks one per blob.

pub mod azcopy;
pub mod landed;
pub mod native;
pub mod plan;
pub mod select;
pub mod side;
pub mod sizing;

use crate::digest::Digests;
use crate::error::{io_kind, Classify, ErrorKind};
use crate::storage::{BlobMeta, StorageError};
use async_trait::async_trait;
use landed::Landed;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{tool}: {message}")]
    Tool { tool: FetcherKind, message: String },
    /// A range fetched to be served before the whole-file check did not pass the
    /// service's range MD5 (or came without one).
    #[error("{blob:?}: bytes {range:?} failed their range check: {what}")]
    RangeCheck {
        blob: String,
        range: std::ops::Range<u64>,
        what: String,
    },
    #[error("{blob:?}: received {actual} bytes, expected {expected}")]
    SizeMismatch {
        blob: String,
        expected: u64,
        actual: u64,
    },
}

impl FetchError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        FetchError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl Classify for FetchError {
    fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Storage(e) => e.kind(),
            FetchError::Io { source, .. } => io_kind(source),
            FetchError::Tool { .. } => ErrorKind::Other,
            FetchError::SizeMismatch { .. } | FetchError::RangeCheck { .. } => ErrorKind::Corrupt,
        }
    }
}

impl crate::storage::Retryable for FetchError {
    /// A range that failed its check is fetched again, whole, within the retry budget.
    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient || matches!(self, FetchError::RangeCheck { .. })
    }
}

/// Which fetcher downloaded a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetcherKind {
    Native,
    Azcopy,
}

impl FetcherKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FetcherKind::Native => "native",
            FetcherKind::Azcopy => "azcopy",
        }
    }
}

impl std::fmt::Display for FetcherKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a completed fetch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchReport {
    /// The fetcher that actually downloaded the file.
    pub fetcher: FetcherKind,
    /// Digests computed while downloading, so verification needs no second pass; `None`
    /// when the fetcher could not see the bytes (azcopy).
    pub digests: Option<Digests>,
}

/// One download: which blob version, into which file, and whom to tell.
pub struct FetchJob<'a> {
    pub meta: &'a BlobMeta,
    /// An existing, empty file in the cache's `tmp/`.
    pub dest: &'a Path,
    pub progress: &'a dyn ProgressSink,
    /// Where the fetcher records each byte range as it is written.
    pub landed: &'a Arc<Landed>,
    /// Verification will need an MD5 (no xxh3 metadata, but Content-MD5): compute it too.
    pub hash_md5: bool,
    /// Whom to tell when readers may read landed bytes before the fetch ends; `None` when
    /// nobody reads before the whole file is verified.
    pub early: Option<&'a dyn EarlyReads>,
}

/// Lets readers in before a fetch ends. A fetcher that knows which bytes of which file
/// have landed, for the version the service has confirmed, says so.
pub trait EarlyReads: Send + Sync {
    /// From now on readers may read the bytes `landed` records from the file at `path`
    /// (until another call names other ones, or the fetch ends).
    fn readable(&self, landed: &Arc<Landed>, path: &Path);
}

/// Live progress of downloads, the one interface every fetcher reports to (a progress
/// bar, periodic log lines, metrics).
pub trait ProgressSink: Send + Sync {
    /// `done` of `total` bytes of `blob` are local now; `done` only grows.
    fn progress(&self, blob: &str, done: u64, total: u64);
}

/// Progress nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn progress(&self, _blob: &str, _done: u64, _total: u64) {}
}

/// Downloads one blob version, whole, into `job.dest`, recording landed ranges and
/// reporting progress as it goes.
#[async_trait]
pub trait Fetcher: Send + Sync + 'static {
    async fn fetch(&self, job: &FetchJob<'_>) -> Result<FetchReport, FetchError>;
}
