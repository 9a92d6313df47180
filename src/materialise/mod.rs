//! The materialisation pipeline: how one blob version becomes a complete, verified cache
//! entry. It owns its fetcher; callers (`fs`, `prefetch`) ask it for an entry and get an
//! open, shared-locked cache file.
//!
//! ```text
//! lookup ─hit──────────────────────────────────────────────────────────────▶ entry
//!    └miss▶ single-flight (this process) ▶ entry lock (all processes) ▶ lookup again
//!             ▶ reserve space ▶ fetch into tmp/ (landed ranges) ▶ verify ▶ fsync ▶ publish
//!                                 └─version confirmed▶ readers (download.rs)
//! ```
//!
//! - Concurrent requests for one entry are collapsed: a [`SingleFlight`] per entry in the
//!   process, then the cache's per-entry file lock across processes. After each, the cache
//!   is looked at again: whoever waited finds the file.
//! - Verification ([`verify`]) uses the digests the fetcher computed while downloading
//!   when it could see the bytes, else hashes the file once.
//! - Bytes that fail verification are downloaded once more before the caller gets an
//!   error: a flip in transit then costs one download, a wrong recorded digest two.
//! - A download that finds the disk full evicts once and tries once more.
//! - A failed fetch leaves nothing: its temporary is removed, nothing is published.
//! - Readers need not wait for all of it: [`Materialiser::open_early`] returns a
//!   [`download::Download`] once the service has confirmed the version, and its reads are
//!   served from the landed byte ranges ([`crate::fetch::landed`]) while the fetch goes on
//!   to verification and publication by itself. Bytes readers may have been served are
//!   never refetched: a failed check then fails every handle.

pub mod download;
pub mod error;
pub mod verify;

use crate::cache::entry::{self, EntryAttrs};
use crate::cache::layout::EntryKey;
use crate::cache::{sync_file, Cache, CachedFile, HeldEntry};
use crate::error::{Classify, ErrorKind};
use crate::fetch::landed::Landed;
use crate::fetch::{EarlyReads, FetchJob, FetchReport, Fetcher, NoProgress, ProgressSink};
use crate::metrics::Metrics;
use crate::single_flight::SingleFlight;
use crate::storage::BlobMeta;
use download::{Download, Opened};
pub use error::MaterialiseError;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use verify::{verify_digests, verify_file, Verified, VerifyError, VerifyPolicy};

pub type Result<T, E = MaterialiseError> = std::result::Result<T, E>;

pub struct Materialiser {
    cache: Arc<Cache>,
    fetcher: Arc<dyn Fetcher>,
    policy: VerifyPolicy,
    flights: SingleFlight<EntryKey>,
    /// Downloads readers may join while they run (this process).
    downloads: Mutex<HashMap<EntryKey, Weak<Download>>>,
    progress: Arc<dyn ProgressSink>,
    metrics: Arc<Metrics>,
    /// Set at shutdown: downloads still running are abandoned.
    cancel: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Materialiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Materialiser")
            .field("cache", &self.cache.layout().root())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Materialiser {
    pub fn new(cache: Arc<Cache>, fetcher: Arc<dyn Fetcher>, policy: VerifyPolicy) -> Self {
        Self {
            cache,
            fetcher,
            policy,
            flights: SingleFlight::new(),
            downloads: Mutex::new(HashMap::new()),
            progress: Arc::new(NoProgress),
            metrics: Arc::new(Metrics::default()),
            cancel: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Counts hits, misses, downloads and failures into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports every download's progress to `sink`.
    pub fn with_progress(mut self, sink: Arc<dyn ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Abandons every download in progress (their opens fail, their temporaries are
    /// removed) so a shutdown is not held up by them.
    pub fn cancel_downloads(&self) {
        self.cancel.send_replace(true);
    }

    /// Downloads in progress in this process.
    pub fn in_flight(&self) -> u64 {
        self.metrics.in_flight.load(Ordering::SeqCst)
    }

    /// Opens the verified cache file for `key` for reading, materialising it first when
    /// absent, and records the use (for eviction). The file holds a shared lock that keeps
    /// eviction away from it while it is open.
    pub async fn open(&self, key: &EntryKey, meta: &BlobMeta) -> Result<HeldEntry> {
        let held = self.entry(key, meta, None).await?;
        touch(&held);
        Ok(held)
    }

    /// Opens `key` for reading as early as it can be read: the verified cache file when
    /// there is one, else the download, as soon as the service has confirmed the version
    /// (joining this process's download of it when one runs). The download runs on by
    /// itself, to publication, whether or not its readers stay. With
    /// [`VerifyPolicy::before_read`], waits for the verified file as [`Materialiser::open`].
    pub async fn open_early(
        self: &Arc<Self>,
        key: &EntryKey,
        meta: &BlobMeta,
    ) -> Result<Opened, Arc<MaterialiseError>> {
        if self.policy.before_read {
            return match self.open(key, meta).await {
                Ok(held) => Ok(Opened::Published(held)),
                Err(e) => {
                    log_failure(key, &e);
                    Err(Arc::new(e))
                }
            };
        }
        if let Some(hit) = self.cache.lookup(key, meta.size) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            touch(&hit);
            return Ok(Opened::Published(hit));
        }
        let download = self.join_or_start(key, meta);
        download.wait_readable().await?;
        Ok(Opened::Streaming(download))
    }

    fn join_or_start(self: &Arc<Self>, key: &EntryKey, meta: &BlobMeta) -> Arc<Download> {
        let mut downloads = self.downloads.lock().expect("downloads");
        if let Some(running) = downloads.get(key).and_then(Weak::upgrade) {
            // An open that joins a download had to download too.
            self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            return running;
        }
        let download = Arc::new(Download::new(meta.size));
        downloads.insert(key.clone(), Arc::downgrade(&download));
        let (this, key, meta) = (Arc::clone(self), key.clone(), meta.clone());
        let running = Arc::clone(&download);
        tokio::spawn(async move {
            let result = this.entry(&key, &meta, Some(&running)).await;
            if let Err(e) = &result {
                log_failure(&key, e);
            }
            running.finish(
                result
                    .map(|held| {
                        touch(&held);
                        Arc::new(held)
                    })
                    .map_err(Arc::new),
            );
            let mut downloads = this.downloads.lock().expect("downloads");
            if downloads
                .get(&key)
                .is_some_and(|d| d.as_ptr() == Arc::as_ptr(&running))
            {
                downloads.remove(&key);
            }
        });
        download
    }

    /// Makes sure `key` is in the cache (prefetch, hashing on demand).
    pub async fn ensure(&self, key: &EntryKey, meta: &BlobMeta) -> Result<CachedFile> {
        Ok(self.entry(key, meta, None).await?.cached)
    }

    /// The entry, held from the moment it is found or published: eviction can never remove
    /// it before the caller has it.
    /// When `download` is given, readers follow the fetch through it.
    async fn entry(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        download: Option<&Download>,
    ) -> Result<HeldEntry> {
        if let Some(hit) = self.cache.lookup(key, meta.size) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        let _flight = self.flights.enter(key.clone()).await;
        if let Some(hit) = self.cache.lookup(key, meta.size) {
            return Ok(hit);
        }
        self.cache.ensure_dirs()?;
        let _entry_lock = self.cache.lock_entry(key).await?;
        if let Some(hit) = self.cache.lookup(key, meta.size) {
            return Ok(hit);
        }
        // Holding the entry lock: any temporary for this entry belongs to a dead process.
        self.cache.remove_stale_temporaries(Some(key));
        self.materialise(key, meta, download).await
    }

    /// Materialises `key`, counting a failure under its kind, whichever step failed.
    async fn materialise(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        download: Option<&Download>,
    ) -> Result<HeldEntry> {
        let result = self.reserve_and_fetch(key, meta, download).await;
        if let Err(e) = &result {
            self.metrics.record_failure(e.kind());
        }
        result
    }

    /// Refuses what could never verify, reserves space, then fetches, verifies and
    /// publishes. Two failures get one more download each: bytes that fail verification
    /// (a flip in transit passes every transport check; only a second download tells it
    /// from a blob whose recorded digest is wrong), and a disk that filled up meanwhile
    /// (after an eviction). Bytes readers may have been served are never fetched again:
    /// a failed check then fails every handle.
    async fn reserve_and_fetch(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        download: Option<&Download>,
    ) -> Result<HeldEntry> {
        verify::check_verifiable(meta, self.policy)?;
        let reservation = self.cache.reserve(&meta.name, meta.size).await?;
        self.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        let (mut refetched, mut evicted) = (false, false);
        let result = loop {
            let result = self.fetch_verify_publish(key, meta, download).await;
            let streamed = download.is_some_and(Download::has_streamed);
            match &result {
                Err(e) if e.kind() == ErrorKind::Corrupt && !refetched && !streamed => {
                    refetched = true;
                    tracing::warn!(blob = %meta.name, error = %e, "downloaded bytes failed verification; downloading once more");
                }
                Err(e) if e.kind() == ErrorKind::NoSpace && !evicted => {
                    evicted = true;
                    tracing::warn!(blob = %meta.name, needed = meta.size, "cache disk full during download; evicting and retrying once");
                    if self.cache.evict_for_reserved().await.is_err() {
                        break result;
                    }
                }
                _ => break result,
            }
        };
        self.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
        if result.is_ok() {
            reservation.commit();
        }
        result
    }

    async fn fetch_verify_publish(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        download: Option<&Download>,
    ) -> Result<HeldEntry> {
        let tmp = self.cache.new_temporary(key)?;
        let started = Instant::now();
        let landed = Arc::new(Landed::new(meta.size));
        let job = FetchJob {
            meta,
            dest: tmp.path(),
            progress: self.progress.as_ref(),
            landed: &landed,
            hash_md5: verify::needs_md5(meta),
            early: download.map(|d| d as &dyn EarlyReads),
        };
        let mut cancelled = self.cancel.subscribe();
        let fetched = tokio::select! {
            report = self.fetcher.fetch(&job) => report.map_err(MaterialiseError::from),
            _ = cancelled.wait_for(|c| *c) => Err(MaterialiseError::Cancelled),
        };
        // Nothing more will land, whatever happened.
        landed.end();
        let report = fetched?;
        let verified = self
            .verify(tmp.path(), meta, report)
            .await
            .inspect_err(|e| {
                if e.kind() == ErrorKind::Corrupt {
                    self.metrics
                        .verification_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            })?;
        // Verified: readers still waiting need not wait for the fsync. They read the
        // verified file from now on (after azcopy, they may have read a side file).
        if let Some(download) = download {
            let landed = Arc::new(Landed::new(meta.size));
            landed.add(0..meta.size);
            landed.end();
            download.readable(&landed, tmp.path());
        }
        let path = tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || sync_file(&path))
            .await
            .expect("fsync task panicked")?;
        let attrs = EntryAttrs {
            uri: Some(key.uri()),
            etag: Some(key.etag.clone()),
            xxh3: Some(verified.xxh3),
        };
        let held = self.cache.publish_temporary(tmp, key, &attrs)?;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .record_fetch(report.fetcher, meta.size, seconds);
        tracing::info!(
            blob = %meta.name,
            bytes = meta.size,
            fetcher = report.fetcher.as_str(),
            verified_by = verified.checked_by.as_str(),
            seconds,
            "materialised"
        );
        Ok(held)
    }

    /// Verifies the fetched file (streamed digests when the fetcher had them), off the
    /// async threads.
    async fn verify(
        &self,
        path: &std::path::Path,
        meta: &BlobMeta,
        report: FetchReport,
    ) -> Result<Verified> {
        let (path, meta, policy) = (path.to_path_buf(), meta.clone(), self.policy);
        tokio::task::spawn_blocking(move || {
            let io = |source| VerifyError::Io {
                path: path.display().to_string(),
                source,
            };
            let verified = match report.digests {
                Some(d) => {
                    let len = std::fs::metadata(&path).map_err(io)?.len();
                    verify_digests(&meta, policy, &d, len)?
                }
                None => verify_file(&path, &meta, policy)?,
            };
            Ok::<_, MaterialiseError>(verified)
        })
        .await
        .expect("verify task panicked")
    }
}

/// Records a use of the entry, for eviction.
fn touch(held: &HeldEntry) {
    if let Ok(modified) = held.file.metadata().and_then(|m| m.modified()) {
        entry::touch(&held.file, modified);
    }
}

/// The one log line of a failed materialisation.
fn log_failure(key: &EntryKey, e: &MaterialiseError) {
    tracing::error!(blob = %key.uri(), error = %e, "could not materialise; its readers get an error and nothing was cached");
}
