//! Fetchers materialise one blob version into a local temporary file; [`verify`] then checks
//! the bytes before the cache makes them visible. The native fetcher lives here; azcopy
//! joins it behind the same trait.

pub mod azcopy;
pub mod native;
pub mod select;
pub mod sizing;
pub mod verify;

use crate::digest::DigestError;
use crate::storage::{BlobMeta, StorageError};
use async_trait::async_trait;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{algo} mismatch for {blob:?}: metadata says {expected}, the downloaded bytes hash to {actual}; the blob is corrupt or its metadata is wrong")]
    DigestMismatch {
        blob: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{blob:?} has neither an xxh3_128 digest in its metadata nor Content-MD5, and --require-digest refuses unverifiable blobs")]
    MissingDigest { blob: String },
    #[error("{blob:?} has an unusable digest in its metadata: {source}")]
    BadDigestMetadata { blob: String, source: DigestError },
    #[error("adlsfs is shutting down; the download was abandoned")]
    Cancelled,
    #[error("{tool}: {message}")]
    Tool { tool: &'static str, message: String },
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

    /// The local disk is full (or over quota).
    pub fn is_no_space(&self) -> bool {
        matches!(self, FetchError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// What a completed fetch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchReport {
    /// The fetcher that actually downloaded the file ("native", "azcopy").
    pub fetcher: &'static str,
    /// Digests computed while downloading, so verification needs no second pass; `None`
    /// when the fetcher could not see the bytes (azcopy).
    pub digests: Option<StreamedDigests>,
}

/// Digests of a file computed as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedDigests {
    pub xxh3: crate::digest::Xxh3Digest,
    /// Only computed when verification will need it (no xxh3 metadata, Content-MD5 present).
    pub md5: Option<crate::digest::Md5Digest>,
}

impl StreamedDigests {
    pub fn of(data: &[u8], with_md5: bool) -> Self {
        Self {
            xxh3: crate::digest::xxh3_128(data),
            md5: with_md5.then(|| crate::digest::md5(data)),
        }
    }
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

/// Downloads one blob version, whole, into `dest` (an existing, empty file), reporting
/// progress as it goes.
#[async_trait]
pub trait Fetcher: Send + Sync + 'static {
    async fn fetch(
        &self,
        meta: &BlobMeta,
        dest: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<FetchReport, FetchError>;
}
