//! Reads served while azcopy fetches a file.
//!
//! azcopy reports only a byte count and writes its blocks out of order into a hidden file
//! of its own that it renames into place at the end, so nothing it wrote can be read
//! before it is done. Meanwhile the native side fetches what readers wait for, in ranges
//! of [`DEMAND_GRANULE`] checked against the service's range MD5, into a file of its own
//! beside the temporary: first the head (whose answer also confirms the version, so the
//! open returns), then each range a reader asks for. It stops fetching once it has
//! fetched a tenth of the file, so the bytes fetched for a file stay within 1.1× its size
//! whatever its readers do; later reads wait for azcopy. When the job ends, the side
//! file goes and readers move on to the verified file.

use super::landed::Landed;
use super::native::{NativeFetcher, DEMAND_GRANULE};
use super::{EarlyReads, FetchError, FetchJob};
use crate::error::{Classify, ErrorKind};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

/// Share of the file the side may fetch.
const BUDGET_SHARE: f64 = 0.1;

pub struct SideReads<'a> {
    job: &'a FetchJob<'a>,
    early: &'a dyn EarlyReads,
    path: PathBuf,
    file: File,
    landed: Arc<Landed>,
    budget: u64,
}

impl<'a> SideReads<'a> {
    /// The side file for `job`, when its readers may read early; `None` otherwise, or
    /// when the file cannot be made (readers then wait for the job).
    pub fn new(job: &'a FetchJob<'a>) -> Option<Self> {
        let early = job.early?;
        let mut path = job.dest.as_os_str().to_owned();
        path.push(".side");
        let path = PathBuf::from(path);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "no reads during the azcopy job"))
            .ok()?;
        let size = job.meta.size;
        Some(Self {
            job,
            early,
            path,
            file,
            landed: Arc::new(Landed::new(size)),
            budget: ((size as f64 * BUDGET_SHARE) as u64).max(2 * DEMAND_GRANULE),
        })
    }

    /// Serves readers for as long as it is polled. Returns only when the blob changed
    /// (the job is then pointless); other failures just end the side's service.
    pub async fn serve(&self, native: &NativeFetcher) -> FetchError {
        let size = self.job.meta.size;
        let mut fetched = 0u64;
        match self.fetch(native, 0..size.min(DEMAND_GRANULE)).await {
            Ok(n) => fetched += n,
            Err(e) if e.kind() == ErrorKind::Changed => return e,
            Err(e) => return self.stop(e).await,
        }
        self.early.readable(&self.landed, &self.path);
        loop {
            for want in self.landed.next_demands().await {
                let start = want.start - want.start % DEMAND_GRANULE;
                let end = want.end.div_ceil(DEMAND_GRANULE) * DEMAND_GRANULE;
                let wanted = start..end.min(size);
                if self.landed.has(&wanted) || fetched >= self.budget {
                    continue;
                }
                match self.fetch(native, wanted).await {
                    Ok(n) => fetched += n,
                    Err(e) if e.kind() == ErrorKind::Changed => return e,
                    Err(e) => return self.stop(e).await,
                }
            }
        }
    }

    /// Fetches and writes `range`, checked piece by piece; the bytes fetched.
    async fn fetch(&self, native: &NativeFetcher, range: Range<u64>) -> Result<u64, FetchError> {
        let meta = self.job.meta;
        let piece = range.clone();
        let data = native.checked_piece(meta, &piece, &|| {}).await?;
        let (file, path) = (&self.file, &self.path);
        file.write_all_at(&data, range.start)
            .map_err(|e| FetchError::io(path, e))?;
        self.landed.add(range);
        Ok(data.len() as u64)
    }

    async fn stop(&self, e: FetchError) -> FetchError {
        tracing::warn!(blob = %self.job.meta.name, error = %e, "no more reads during the azcopy job; readers wait for it");
        self.landed.end();
        std::future::pending().await
    }
}

impl Drop for SideReads<'_> {
    fn drop(&mut self) {
        // Readers waiting for bytes the side will not bring wait for the verified file.
        self.landed.end();
        let _ = std::fs::remove_file(&self.path);
    }
}
