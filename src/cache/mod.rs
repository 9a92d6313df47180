//! The node-local cache: complete, verified copies of blob versions, shared by every mount
//! and process on the node.
//!
//! - A file appears under its final name only after it was downloaded in full, verified,
//!   fsync'ed and renamed from `tmp/` (same filesystem, so the rename is atomic).
//! - Concurrent requests for one entry are collapsed: an in-process mutex per entry, then
//!   a file lock per entry (`locks/`), so processes sharing the directory download each
//!   entry once. After each lock the final path is checked again: whoever waited finds the
//!   file. Whoever takes an entry's lock also discards temporaries a dead holder left.
//! - The size is bounded ([`evict`]): room is made before each download, and a download
//!   that still finds the disk full evicts once and tries once more.
//! - Readers hold a shared lock on the cache file while it is open, so eviction skips it.

pub mod entry;
pub mod evict;
pub mod layout;

use crate::digest::Xxh3Digest;
use crate::fetch::verify::{verify_digests, verify_file, Verified};
use crate::fetch::{FetchError, Fetcher, NoProgress, ProgressSink};
use crate::metrics::Metrics;
use crate::storage::BlobMeta;
pub use evict::{Bounds, MinFree};
use fs2::FileExt;
use layout::{EntryKey, Layout};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}: {source}")]
    Setup {
        path: String,
        source: std::io::Error,
    },
    #[error("no room in the cache for {blob:?}: {needed} bytes needed, {detail}")]
    NoSpace {
        blob: String,
        needed: u64,
        detail: String,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl CacheError {
    pub fn is_no_space(&self) -> bool {
        match self {
            CacheError::NoSpace { .. } => true,
            CacheError::Fetch(e) => e.is_no_space(),
            CacheError::Setup { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
        }
    }
}

/// A complete, verified cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub path: PathBuf,
    /// Known when this process verified it or the cache recorded it; else hash on demand.
    pub xxh3: Option<Xxh3Digest>,
    /// True when this call downloaded it.
    pub fetched: bool,
}

#[derive(Debug)]
pub struct Cache {
    layout: Layout,
    require_digest: bool,
    bounds: Bounds,
    in_flight: Mutex<HashMap<EntryKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes of complete entries as last counted, plus what this process added since.
    used: AtomicU64,
    /// Bytes of downloads in progress in this process.
    reserved: AtomicU64,
    progress: Arc<dyn ProgressSink>,
    metrics: Arc<Metrics>,
    /// Set at shutdown: downloads still running are abandoned.
    cancel: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for dyn ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl Cache {
    /// Opens (creating) the cache directory with the default bounds and removes
    /// temporaries left by dead processes.
    pub fn open(root: &Path, require_digest: bool) -> Result<Self, CacheError> {
        Self::open_bounded(root, require_digest, Bounds::default())
    }

    pub fn open_bounded(
        root: &Path,
        require_digest: bool,
        bounds: Bounds,
    ) -> Result<Self, CacheError> {
        let layout = Layout::new(root);
        for dir in cache_dirs(&layout) {
            create_private_dir(&dir)?;
        }
        let started = Instant::now();
        let entries = evict::scan(&layout);
        let used = entries.iter().map(|e| e.bytes).sum();
        tracing::info!(
            path = %root.display(),
            entries = entries.len(),
            bytes = used,
            seconds = started.elapsed().as_secs_f64(),
            "cache indexed"
        );
        let cache = Self {
            layout,
            require_digest,
            bounds,
            in_flight: Mutex::new(HashMap::new()),
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(0),
            progress: Arc::new(NoProgress),
            metrics: Arc::new(Metrics::default()),
            cancel: tokio::sync::watch::Sender::new(false),
        };
        cache.remove_stale_temporaries(None);
        Ok(cache)
    }

    /// Counts hits, misses, downloads and evictions into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
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

    /// Removes this process's own temporaries: at shutdown, after unmounting, downloads
    /// that were cut short must not leave files behind.
    pub fn remove_own_temporaries(&self) {
        let suffix = format!(".{}.", std::process::id());
        for entry in fs::read_dir(self.layout.tmp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().contains(&suffix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Reports every download's progress to `sink`.
    pub fn with_progress(mut self, sink: Arc<dyn ProgressSink>) -> Self {
        self.progress = sink;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Opens the verified cache file for `key` for reading, downloading it first when
    /// absent. The returned file holds a shared lock that keeps eviction away from it.
    pub async fn open_entry(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
    ) -> Result<(File, CachedFile), CacheError> {
        let (cached, file) = self.get_or_fetch_locked(key, meta, fetcher).await?;
        if let Ok(modified) = file.metadata().and_then(|m| m.modified()) {
            entry::touch(&file, modified);
        }
        Ok((file, cached))
    }

    /// The verified cache file for `key`, downloading it with `fetcher` when absent.
    pub async fn get_or_fetch(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
    ) -> Result<CachedFile, CacheError> {
        Ok(self.get_or_fetch_locked(key, meta, fetcher).await?.0)
    }

    /// [`Cache::get_or_fetch`], with the file open and shared-locked from the moment it is
    /// found or published: eviction can never remove it before the caller has it.
    async fn get_or_fetch_locked(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
    ) -> Result<(CachedFile, File), CacheError> {
        let path = self.layout.entry_path(key);
        if let Some(hit) = lookup(&path, meta.size) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        let entry_mutex = {
            let mut map = self.in_flight.lock().expect("in-flight map");
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let result = async {
            let _in_process = entry_mutex.lock().await;
            if let Some(hit) = lookup(&path, meta.size) {
                return Ok(hit);
            }
            // The directory may have been deleted under a running mount: recreate it.
            ensure_dirs(&self.layout)?;
            let lock_path = self.layout.entry_lock_path(key);
            let lock = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path))
                .await
                .expect("lock task panicked")?;
            if let Some(hit) = lookup(&path, meta.size) {
                return Ok(hit);
            }
            // Holding the entry lock: any temporary for this entry belongs to a dead process.
            self.remove_stale_temporaries(Some(key));
            let result = self.download(key, meta, fetcher, &path).await;
            drop(lock);
            result
        }
        .await;
        let mut map = self.in_flight.lock().expect("in-flight map");
        if Arc::strong_count(&entry_mutex) <= 2 {
            map.remove(key);
        }
        result
    }

    /// Makes room for `size` more bytes within the bounds, evicting if needed.
    async fn make_room(&self, blob: &str, size: u64) -> Result<(), CacheError> {
        let no_space = |detail: String| CacheError::NoSpace {
            blob: blob.to_string(),
            needed: size,
            detail,
        };
        if let Some(max) = self.bounds.max_bytes {
            if size > max {
                return Err(no_space(format!(
                    "larger than the whole cache (--cache-size {max})"
                )));
            }
        }
        let incoming = self.reserved.load(Ordering::SeqCst) + size;
        let (fs_size, available) =
            evict::filesystem_space(self.layout.root()).map_err(|source| CacheError::Setup {
                path: self.layout.root().display().to_string(),
                source,
            })?;
        let min_free = self.bounds.min_free.bytes(fs_size);
        if size.saturating_add(min_free) > fs_size {
            return Err(no_space(format!(
                "larger than the cache filesystem ({fs_size} bytes, keeping {min_free} free)"
            )));
        }
        let over_size = self
            .bounds
            .max_bytes
            .is_some_and(|max| self.used.load(Ordering::SeqCst) + incoming > max);
        if !over_size && available >= min_free + incoming {
            return Ok(());
        }
        self.evict_now(incoming).await?;
        Ok(())
    }

    /// Runs one eviction pass for `incoming` bytes and recounts the usage.
    async fn evict_now(&self, incoming: u64) -> Result<evict::Evicted, CacheError> {
        let (layout, bounds) = (self.layout.clone(), self.bounds);
        let evicted = tokio::task::spawn_blocking(move || evict::evict(&layout, &bounds, incoming))
            .await
            .expect("evict task panicked")
            .map_err(|source| CacheError::Setup {
                path: self.layout.root().display().to_string(),
                source,
            })?;
        // The pass counted every entry, other processes' included: take its figure.
        self.used.store(evicted.remaining_bytes, Ordering::SeqCst);
        self.metrics
            .evictions
            .fetch_add(evicted.files as u64, Ordering::Relaxed);
        self.metrics
            .evicted_bytes
            .fetch_add(evicted.bytes, Ordering::Relaxed);
        if evicted.files > 0 {
            tracing::info!(
                files = evicted.files,
                bytes = evicted.bytes,
                in_use = evicted.skipped_in_use,
                "evicted"
            );
        }
        Ok(evicted)
    }

    async fn download(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
        final_path: &Path,
    ) -> Result<(CachedFile, File), CacheError> {
        self.make_room(&meta.name, meta.size).await?;
        self.reserved.fetch_add(meta.size, Ordering::SeqCst);
        self.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut result = self.download_once(key, meta, fetcher, final_path).await;
        if matches!(&result, Err(e) if e.is_no_space()) {
            // The disk filled up under us (other processes, other files): evict, try once more.
            tracing::warn!(blob = %meta.name, needed = meta.size, "cache disk full during download; evicting and retrying once");
            let incoming = self.reserved.load(Ordering::SeqCst);
            if self.evict_now(incoming).await.is_ok() {
                result = self.download_once(key, meta, fetcher, final_path).await;
            }
        }
        self.reserved.fetch_sub(meta.size, Ordering::SeqCst);
        self.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
        match &result {
            Ok(_) => {
                self.used.fetch_add(meta.size, Ordering::SeqCst);
            }
            Err(e) => {
                self.metrics.fetch_failures.fetch_add(1, Ordering::Relaxed);
                if matches!(
                    e,
                    CacheError::Fetch(
                        FetchError::DigestMismatch { .. } | FetchError::SizeMismatch { .. }
                    )
                ) {
                    self.metrics
                        .verification_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }

    async fn download_once(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
        final_path: &Path,
    ) -> Result<(CachedFile, File), CacheError> {
        let tmp = self.new_temporary(key)?;
        let started = Instant::now();
        let result = async {
            let mut cancelled = self.cancel.subscribe();
            let report = tokio::select! {
                report = fetcher.fetch(meta, &tmp, self.progress.as_ref()) => report?,
                _ = cancelled.wait_for(|c| *c) => return Err(FetchError::Cancelled),
            };
            let (tmp_owned, meta_owned, require) = (tmp.clone(), meta.clone(), self.require_digest);
            let streamed = report.digests;
            let verified = tokio::task::spawn_blocking(move || {
                let verified = match streamed {
                    // Hashed while downloading; the file's size is checked here.
                    Some(d) => {
                        let size = fs::metadata(&tmp_owned)
                            .map_err(|e| FetchError::io(&tmp_owned, e))?
                            .len();
                        verify_digests(&meta_owned, require, d.xxh3, d.md5, size)?
                    }
                    None => verify_file(&tmp_owned, &meta_owned, require)?,
                };
                sync_file(&tmp_owned)?;
                Ok::<Verified, FetchError>(verified)
            })
            .await
            .expect("verify task panicked")?;
            let attrs = entry::EntryAttrs {
                uri: Some(format!(
                    "adls://{}/{}/{}",
                    key.account, key.container, key.blob
                )),
                etag: Some(key.etag.clone()),
                xxh3: Some(verified.xxh3),
            };
            // Held from before the rename, so eviction cannot take it before our reader.
            let held = open_shared(&tmp).map_err(|e| FetchError::io(&tmp, e))?;
            publish(&tmp, final_path, &attrs)?;
            Ok((verified, report, held))
        }
        .await;
        match result {
            Ok((verified, report, held)) => {
                self.metrics.record_fetch(
                    report.fetcher,
                    meta.size,
                    started.elapsed().as_secs_f64(),
                );
                tracing::info!(
                    blob = %meta.name,
                    bytes = meta.size,
                    fetcher = report.fetcher,
                    verified_by = verified.checked_by,
                    seconds = started.elapsed().as_secs_f64(),
                    "materialised"
                );
                let cached = CachedFile {
                    path: final_path.to_path_buf(),
                    xxh3: Some(verified.xxh3),
                    fetched: true,
                };
                Ok((cached, held))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(CacheError::Fetch(e))
            }
        }
    }

    /// A new empty temporary named after the entry's lock, so clean-up can tell whether a
    /// live process still owns it.
    fn new_temporary(&self, key: &EntryKey) -> Result<PathBuf, CacheError> {
        let path = self.layout.tmp_dir().join(format!(
            "{}.{}.{:08x}",
            lock_id(&self.layout, key),
            std::process::id(),
            fastrand::u32(..)
        ));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| CacheError::Fetch(FetchError::io(&path, e)))?;
        Ok(path)
    }

    /// Removes temporaries whose writer died: for one entry whose lock the caller holds,
    /// or (at start) all whose entry lock nobody holds.
    fn remove_stale_temporaries(&self, held: Option<&EntryKey>) {
        let Ok(entries) = fs::read_dir(self.layout.tmp_dir()) else {
            return;
        };
        let held_id = held.map(|k| lock_id(&self.layout, k));
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            let stale = match &held_id {
                Some(held) => held == id,
                None => {
                    let lock_path = self.layout.locks_dir().join(format!("{id}.lock"));
                    match File::open(&lock_path) {
                        Ok(f) => f.try_lock_exclusive().is_ok(),
                        Err(_) => true,
                    }
                }
            };
            if stale {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed stale temporary")
                    }
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "could not remove stale temporary")
                    }
                }
            }
        }
    }
}

fn cache_dirs(layout: &Layout) -> [PathBuf; 4] {
    [
        layout.root().to_path_buf(),
        layout.entries_dir(),
        layout.tmp_dir(),
        layout.locks_dir(),
    ]
}

/// Recreates whichever of the cache's directories went missing.
fn ensure_dirs(layout: &Layout) -> Result<(), CacheError> {
    for dir in cache_dirs(layout) {
        if !dir.is_dir() {
            create_private_dir(&dir)?;
        }
    }
    Ok(())
}

fn lock_id(layout: &Layout, key: &EntryKey) -> String {
    layout
        .entry_lock_path(key)
        .file_stem()
        .expect("lock file name")
        .to_string_lossy()
        .into_owned()
}

/// Opens `path` for reading with a shared lock, which keeps eviction away from it.
fn open_shared(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    file.lock_shared()?;
    Ok(file)
}

/// A complete entry at `path`, if there is one of the expected size, opened and
/// shared-locked (an entry evicted meanwhile is simply not found).
fn lookup(path: &Path, size: u64) -> Option<(CachedFile, File)> {
    let file = open_shared(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != size {
        return None;
    }
    let cached = CachedFile {
        path: path.to_path_buf(),
        xxh3: entry::read_digest(path),
        fetched: false,
    };
    Some((cached, file))
}

fn lock_exclusive(path: &Path) -> Result<File, CacheError> {
    let setup = |source| CacheError::Setup {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map_err(setup)?;
    file.lock_exclusive().map_err(setup)?;
    Ok(file)
}

fn sync_file(path: &Path) -> Result<(), FetchError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| FetchError::io(path, e))
}

/// Makes a verified temporary visible: record what it is, fix its mode, rename it into
/// place and fsync the directory so the rename survives a crash.
fn publish(tmp: &Path, final_path: &Path, attrs: &entry::EntryAttrs) -> Result<(), FetchError> {
    let parent = final_path.parent().expect("entry path has a parent");
    fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    entry::write_attrs(tmp, attrs);
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o644))
        .map_err(|e| FetchError::io(tmp, e))?;
    fs::rename(tmp, final_path).map_err(|e| FetchError::io(final_path, e))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| FetchError::io(parent, e))
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let setup = |source| CacheError::Setup {
        path: dir.display().to_string(),
        source,
    };
    fs::create_dir_all(dir).map_err(setup)?;
    // Readable by every local user, writable only by the owner.
    let mode = fs::metadata(dir).map_err(setup)?.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o022)).map_err(setup)?;
    }
    Ok(())
}
