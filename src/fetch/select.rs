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

use super::azcopy::{AzcopyFetcher, AzcopyRun, AzcopyUse};
use super::native::NativeFetcher;
use super::side::SideReads;
use super::{FetchError, FetchJob, FetchReport, Fetcher, FetcherKind};
use async_trait::async_trait;
use std::sync::Arc;

/// `--fetcher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetcherMode {
    Auto,
    Azcopy,
    Native,
}

/// Smallest blob `--fetcher azcopy` hands to azcopy when `--azcopy-min-size` is not set.
pub const AZCOPY_FLOOR: u64 = 20 << 20;

/// The selection rule: how a blob of `size` bytes may use azcopy.
pub fn azcopy_use(mode: FetcherMode, azcopy_min_size: Option<u64>, size: u64) -> AzcopyUse {
    match (mode, azcopy_min_size) {
        (FetcherMode::Auto, Some(min)) if size >= min => AzcopyUse::IfFree,
        (FetcherMode::Azcopy, min) if size >= min.unwrap_or(AZCOPY_FLOOR) => AzcopyUse::Wait,
        _ => AzcopyUse::Never,
    }
}

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
    async fn fetch(&self, job: &FetchJob<'_>) -> Result<FetchReport, FetchError> {
        let meta = job.meta;
        let use_ = azcopy_use(self.mode, self.azcopy_min_size, meta.size);
        if let (AzcopyUse::IfFree | AzcopyUse::Wait, Some(azcopy)) = (use_, &self.azcopy) {
            // Readers may come in during the job: the native side serves what they wait for.
            let side = SideReads::new(job);
            let run = match &side {
                Some(side) => tokio::select! {
                    run = azcopy.fetch_job(job, use_) => run,
                    changed = side.serve(&self.native) => return Err(changed),
                },
                None => azcopy.fetch_job(job, use_).await,
            };
            drop(side);
            match run {
                Ok(AzcopyRun::Fetched) => {
                    return Ok(FetchReport {
                        fetcher: FetcherKind::Azcopy,
                        digests: None,
                    })
                }
                Ok(AzcopyRun::NotRun) => {
                    tracing::debug!(blob = %meta.name, "azcopy busy with another file; fetching natively");
                }
                Err(e) => {
                    tracing::warn!(blob = %meta.name, error = %e, "azcopy failed; falling back to the native fetcher");
                }
            }
        }
        self.native.fetch(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FetcherMode::{Auto, Azcopy, Native};

    #[test]
    fn the_selection_rule_as_a_table() {
        const M: u64 = 1 << 20;
        #[rustfmt::skip]
        let table = [
            // mode, --azcopy-min-size, blob size, expected
            (Native, None,          1 << 40,  AzcopyUse::Never),
            (Native, Some(0),       1 << 40,  AzcopyUse::Never),
            (Auto,   None,          1 << 40,  AzcopyUse::Never),   // native-first
            (Auto,   Some(64 * M),  64 * M,   AzcopyUse::IfFree),  // never queues
            (Auto,   Some(64 * M),  64 * M - 1, AzcopyUse::Never),
            (Azcopy, None,          AZCOPY_FLOOR, AzcopyUse::Wait),
            (Azcopy, None,          AZCOPY_FLOOR - 1, AzcopyUse::Never), // start-up cost
            (Azcopy, Some(0),       0,        AzcopyUse::Wait),
            (Azcopy, Some(8 * M),   7 * M,    AzcopyUse::Never),
        ];
        for (mode, min, size, expected) in table {
            assert_eq!(
                azcopy_use(mode, min, size),
                expected,
                "{mode:?} min {min:?} size {size}"
            );
        }
    }
}
