//! Which fetcher materialises a file: `--fetcher auto|azcopy|native`.
//!
//! `auto` is native-first: on the development machine the native fetcher beat azcopy at
//! every size measured (docs/BENCHMARKS.md), so `auto` hands a blob to azcopy only when
//! `--azcopy-min-size` is set and the blob is at least that big (for links where azcopy
//! wins), the binary was found and the node's azcopy lock is free right now; no open ever
//! queues behind another file's azcopy job. `azcopy` uses azcopy for blobs of at least
//! `--azcopy-min-size` (default [`AZCOPY_FLOOR`]), waiting for the lock: smaller blobs go
//! native there too, since azcopy costs about two seconds of start-up even for a few bytes.
//! Whenever azcopy fails (missing, crashed, refused, stalled), the file is fetched natively
//! instead and the reason is logged: users never see a failure native could have served.

use super::azcopy::{AzcopyError, AzcopyFetcher};
use super::native::NativeFetcher;
use super::{FetchError, FetchReport, Fetcher, ProgressSink};
use crate::storage::BlobMeta;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FetcherMode {
    Auto,
    Azcopy,
    Native,
}

/// Smallest blob `--fetcher azcopy` hands to azcopy when `--azcopy-min-size` is not set.
pub const AZCOPY_FLOOR: u64 = 20 << 20;

pub struct SelectingFetcher {
    mode: FetcherMode,
    native: Arc<NativeFetcher>,
    azcopy: Option<Arc<AzcopyFetcher>>,
    azcopy_min_size: Option<u64>,
}

impl SelectingFetcher {
    pub fn new(
        mode: FetcherMode,
        native: Arc<NativeFetcher>,
        azcopy: Option<Arc<AzcopyFetcher>>,
        azcopy_min_size: Option<u64>,
    ) -> Self {
        Self {
            mode,
            native,
            azcopy,
            azcopy_min_size,
        }
    }
}

#[async_trait]
impl Fetcher for SelectingFetcher {
    async fn fetch(
        &self,
        meta: &BlobMeta,
        dest: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<FetchReport, FetchError> {
        let wait = match (self.mode, self.azcopy_min_size) {
            (FetcherMode::Native, _) | (FetcherMode::Auto, None) => None,
            (FetcherMode::Auto, Some(min)) if meta.size >= min => Some(false),
            (FetcherMode::Azcopy, min) if meta.size >= min.unwrap_or(AZCOPY_FLOOR) => Some(true),
            _ => None,
        };
        if let (Some(wait), Some(azcopy)) = (wait, &self.azcopy) {
            match azcopy.fetch_locked(meta, dest, wait, progress).await {
                Ok(()) => {
                    return Ok(FetchReport {
                        fetcher: "azcopy",
                        digests: None,
                    })
                }
                Err(AzcopyError::Busy) => {
                    tracing::debug!(blob = %meta.name, "azcopy busy with another file; fetching natively");
                }
                Err(e) => {
                    tracing::warn!(blob = %meta.name, error = %e, "azcopy failed; falling back to the native fetcher");
                }
            }
        }
        self.native.fetch(meta, dest, progress).await
    }
}
