//! Which fetcher materialises a file: `--fetcher auto|azcopy|native`.
//!
//! Blobs smaller than `--azcopy-min-size` always go native: azcopy costs about two seconds
//! of start-up even for a few bytes. For larger ones, `auto` uses azcopy when a binary was
//! found and the node's azcopy lock is free right now, and the native fetcher otherwise, so
//! no open ever queues behind another file's azcopy job; `azcopy` waits for the lock.
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

pub struct SelectingFetcher {
    mode: FetcherMode,
    native: Arc<NativeFetcher>,
    azcopy: Option<Arc<AzcopyFetcher>>,
    azcopy_min_size: u64,
}

impl SelectingFetcher {
    pub fn new(
        mode: FetcherMode,
        native: Arc<NativeFetcher>,
        azcopy: Option<Arc<AzcopyFetcher>>,
        azcopy_min_size: u64,
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
        let wait = match self.mode {
            _ if meta.size < self.azcopy_min_size => None,
            FetcherMode::Native => None,
            FetcherMode::Azcopy => Some(true),
            FetcherMode::Auto => Some(false),
        };
        if let (Some(wait), Some(azcopy)) = (wait, &self.azcopy) {
            match azcopy.fetch_locked(meta, dest, wait, progress).await {
                Ok(()) => return Ok(FetchReport { fetcher: "azcopy" }),
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
