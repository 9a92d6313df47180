//! The node-local cache, as a store: complete, verified copies of blob versions, shared by
//! every mount and process on the node. It knows where entries live, finds and opens them,
//! reserves and frees space, evicts, and publishes files; it never downloads.
//! [`crate::materialise`] is the pipeline that fills it.
//!
//! - A file appears under its final name only by [`Cache::publish`]: an atomic rename
//!   (from `tmp/`, or from `staging/` for a written file) followed by an fsync of the
//!   directory.
//! - Per-entry file locks (`locks/`) let processes sharing the directory take turns on an
//!   entry ([`Cache::lock_entry`]); whoever takes an entry's lock also discards temporaries a
//!   dead holder left.
//! - The size is bounded ([`evict`]): [`Cache::reserve`] makes room before a download.
//! - Readers hold a shared lock on the cache file while it is open, so eviction skips it.

pub mod entry;
pub mod evict;
pub mod layout;

use crate::digest::Xxh3Digest;
use crate::error::{io_kind, Classify, ErrorKind};
use crate::metrics::Metrics;
pub use evict::{Bounds, MinFree};
use fs2::FileExt;
use layout::{EntryKey, Layout};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    #[error("cache file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl CacheError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn setup(path: &Path, source: std::io::Error) -> Self {
        CacheError::Setup {
            path: path.display().to_string(),
            source,
        }
    }
}

impl Classify for CacheError {
    fn kind(&self) -> ErrorKind {
        match self {
            CacheError::NoSpace { .. } => ErrorKind::NoSpace,
            CacheError::Setup { source, .. } | CacheError::Io { source, .. } => io_kind(source),
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

/// Up to `len` bytes of `file` from `offset`, fewer only at its end (a pread loop that
/// rides out short reads and EINTR).
pub fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// A cache file opened for reading and shared-locked, so eviction leaves it alone for as
/// long as `file` is open.
#[derive(Debug)]
pub struct HeldEntry {
    pub file: File,
    pub cached: CachedFile,
}

/// Space set aside for a download in progress; released on drop, or added to the cache's
/// usage by [`Reservation::commit`] once the file is published.
#[derive(Debug)]
pub struct Reservation<'a> {
    cache: &'a Cache,
    bytes: u64,
}

impl Reservation<'_> {
    pub fn commit(self) {
        self.cache.used.fetch_add(self.bytes, Ordering::SeqCst);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.cache.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// An entry's cross-process lock (`locks/<id>.lock`), held while its holder fetches it.
#[derive(Debug)]
pub struct EntryLock(#[allow(dead_code)] File);

/// A new, empty, private file in `tmp/`, removed on drop unless it was published.
#[derive(Debug)]
pub struct Temporary {
    path: PathBuf,
    armed: bool,
}

impl Temporary {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file has been moved into place: nothing to remove.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    layout: Layout,
    bounds: Bounds,
    /// Bytes of complete entries as last counted, plus what this process added since.
    used: AtomicU64,
    /// Bytes of downloads in progress in this process.
    reserved: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// Opens (creating) the cache directory with the default bounds and removes
    /// temporaries left by dead processes.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        Self::open_bounded(root, Bounds::default())
    }

    pub fn open_bounded(root: &Path, bounds: Bounds) -> Result<Self, CacheError> {
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
            bounds,
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(0),
            metrics: Arc::new(Metrics::default()),
        };
        cache.remove_stale_temporaries(None);
        Ok(cache)
    }

    /// Counts evictions into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The complete entry for `key`, if there is one of the expected size, opened and
    /// shared-locked (an entry evicted meanwhile is simply not found).
    pub fn lookup(&self, key: &EntryKey, size: u64) -> Option<HeldEntry> {
        let path = self.layout.entry_path(key);
        let file = open_shared(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() != size {
            return None;
        }
        let cached = CachedFile {
            xxh3: entry::read_digest(&path),
            path,
            fetched: false,
        };
        Some(HeldEntry { file, cached })
    }

    /// Recreates whichever of the cache's directories went missing (deleted under a
    /// running mount).
    pub fn ensure_dirs(&self) -> Result<(), CacheError> {
        for dir in cache_dirs(&self.layout) {
            if !dir.is_dir() {
                create_private_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Takes `key`'s cross-process lock, waiting (in a blocking thread) while another
    /// process holds it.
    pub async fn lock_entry(&self, key: &EntryKey) -> Result<EntryLock, CacheError> {
        let path = self.layout.entry_lock_path(key);
        tokio::task::spawn_blocking(move || {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .open(&path)
                .map_err(|e| CacheError::setup(&path, e))?;
            file.lock_exclusive()
                .map_err(|e| CacheError::setup(&path, e))?;
            Ok(EntryLock(file))
        })
        .await
        .expect("lock task panicked")
    }

    /// Makes room for `size` more bytes within the bounds, evicting if needed, and sets
    /// them aside until the returned reservation is committed or dropped.
    pub async fn reserve(&self, blob: &str, size: u64) -> Result<Reservation<'_>, CacheError> {
        self.make_room(blob, size).await?;
        self.reserved.fetch_add(size, Ordering::SeqCst);
        Ok(Reservation {
            cache: self,
            bytes: size,
        })
    }

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
        let (fs_size, available) = evict::filesystem_space(self.layout.root())
            .map_err(|e| CacheError::setup(self.layout.root(), e))?;
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

    /// Runs one eviction pass making room for the downloads in progress, and recounts the
    /// usage. For a download that found the disk full after all (other processes, other
    /// files).
    pub async fn evict_for_reserved(&self) -> Result<evict::Evicted, CacheError> {
        self.evict_now(self.reserved.load(Ordering::SeqCst)).await
    }

    async fn evict_now(&self, incoming: u64) -> Result<evict::Evicted, CacheError> {
        let (layout, bounds) = (self.layout.clone(), self.bounds);
        let evicted = tokio::task::spawn_blocking(move || evict::evict(&layout, &bounds, incoming))
            .await
            .expect("evict task panicked")
            .map_err(|e| CacheError::setup(self.layout.root(), e))?;
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

    /// A new empty temporary for `key`, named after the entry's lock, so clean-up can tell
    /// whether a live process still owns it.
    pub fn new_temporary(&self, key: &EntryKey) -> Result<Temporary, CacheError> {
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
            .map_err(|e| CacheError::io(&path, e))?;
        Ok(Temporary { path, armed: true })
    }

    /// Makes a verified, fsync'ed temporary visible as `key`'s entry.
    pub fn publish_temporary(
        &self,
        mut tmp: Temporary,
        key: &EntryKey,
        attrs: &entry::EntryAttrs,
    ) -> Result<HeldEntry, CacheError> {
        let held = self.publish(tmp.path(), key, attrs)?;
        tmp.disarm();
        Ok(held)
    }

    /// Moves `source` into place as `key`'s entry: a verified temporary, or a file written
    /// locally and committed to storage (its content is then known without a download).
    /// Records what the entry is, makes it readable, renames it and fsyncs the directory so
    /// the rename survives a crash. A source on another filesystem is copied to a temporary
    /// first, so the entry still appears atomically. The caller has fsync'ed `source`.
    ///
    /// The returned file is held from before the rename, so eviction cannot take the entry
    /// before the caller has it.
    pub fn publish(
        &self,
        source: &Path,
        key: &EntryKey,
        attrs: &entry::EntryAttrs,
    ) -> Result<HeldEntry, CacheError> {
        let final_path = self.layout.entry_path(key);
        let parent = final_path.parent().expect("entry path has a parent");
        fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
        if !same_filesystem(source, &self.layout.tmp_dir()) {
            return self.publish_copy(source, key, attrs);
        }
        let held = open_shared(source).map_err(|e| CacheError::io(source, e))?;
        let mode = held
            .metadata()
            .map_err(|e| CacheError::io(source, e))?
            .mode()
            & 0o7777;
        entry::write_attrs(source, attrs);
        set_mode(source, 0o644)?;
        if let Err(e) = fs::rename(source, &final_path) {
            // The source stays where it was: as it was (a staged write stays private).
            set_mode(source, mode)?;
            return match e.raw_os_error() {
                // Another mount of the same filesystem: rename cannot cross it.
                Some(libc::EXDEV) => self.publish_copy(source, key, attrs),
                _ => Err(CacheError::io(&final_path, e)),
            };
        }
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| CacheError::io(parent, e))?;
        let cached = CachedFile {
            path: final_path,
            xxh3: attrs.xxh3,
            fetched: true,
        };
        Ok(HeldEntry { file: held, cached })
    }

    /// [`Cache::publish`] of a file on another filesystem: copied into `tmp/`, synced, then
    /// published from there; the source stays where it is.
    fn publish_copy(
        &self,
        source: &Path,
        key: &EntryKey,
        attrs: &entry::EntryAttrs,
    ) -> Result<HeldEntry, CacheError> {
        let tmp = self.new_temporary(key)?;
        fs::copy(source, tmp.path()).map_err(|e| CacheError::io(tmp.path(), e))?;
        sync_file(tmp.path())?;
        self.publish_temporary(tmp, key, attrs)
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

    /// Removes temporaries whose writer died: for one entry whose lock the caller holds,
    /// or (at start) all whose entry lock nobody holds.
    pub fn remove_stale_temporaries(&self, held: Option<&EntryKey>) {
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

fn set_mode(path: &Path, mode: u32) -> Result<(), CacheError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| CacheError::io(path, e))
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true, // let the rename decide
    }
}

/// fsyncs a file's data and metadata.
pub fn sync_file(path: &Path) -> Result<(), CacheError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| CacheError::io(path, e))
}

fn cache_dirs(layout: &Layout) -> [PathBuf; 5] {
    [
        layout.root().to_path_buf(),
        layout.entries_dir(),
        layout.tmp_dir(),
        layout.locks_dir(),
        layout.staging_dir(),
    ]
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

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    let setup = |source| CacheError::Setup {
        path: dir.display().to_string(),
        source,
    };
    fs::create_dir_all(dir).map_err(setup)?;
    // Readable by every local user, writable only by the owner; staged writes are the
    // users' own data, so nobody else may even list them.
    let closed = if dir.file_name() == Some(std::ffi::OsStr::new(layout::STAGING_DIR)) {
        0o077
    } else {
        0o022
    };
    let mode = fs::metadata(dir).map_err(setup)?.permissions().mode() & 0o777;
    if mode & closed != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !closed)).map_err(setup)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn key(blob: &str) -> EntryKey {
        EntryKey {
            account: "acct".into(),
            container: "box".into(),
            blob: blob.into(),
            etag: "\"0x1\"".into(),
        }
    }

    fn attrs(key: &EntryKey, data: &[u8]) -> entry::EntryAttrs {
        entry::EntryAttrs {
            uri: Some(key.uri()),
            etag: Some(key.etag.clone()),
            xxh3: Some(crate::digest::xxh3_128(data)),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_published_temporary_is_found_held_and_described() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let k = key("d/f.bin");
        assert!(cache.lookup(&k, 5).is_none());
        let tmp = cache.new_temporary(&k).unwrap();
        assert_eq!(mode(tmp.path()), 0o600, "temporaries are private");
        fs::write(tmp.path(), b"hello").unwrap();
        let tmp_path = tmp.path().to_path_buf();
        let held = cache
            .publish_temporary(tmp, &k, &attrs(&k, b"hello"))
            .unwrap();
        assert!(!tmp_path.exists(), "moved, not copied");
        assert_eq!(held.cached.path, cache.layout().entry_path(&k));
        assert_eq!(mode(&held.cached.path), 0o644);
        assert!(
            File::open(&held.cached.path)
                .unwrap()
                .try_lock_exclusive()
                .is_err(),
            "the entry is shared-locked while held, so eviction skips it"
        );
        let found = cache.lookup(&k, 5).expect("published entries are found");
        assert_eq!(found.cached.xxh3, Some(crate::digest::xxh3_128(b"hello")));
        assert!(!found.cached.fetched);
        assert!(cache.lookup(&k, 6).is_none(), "a size mismatch is no entry");
        assert_eq!(
            entry::read_attrs(&found.cached.path).uri.as_deref(),
            Some("adls://acct/box/d/f.bin")
        );
    }

    #[test]
    fn a_dropped_temporary_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let tmp = cache.new_temporary(&key("f")).unwrap();
        let path = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(cache.layout().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_written_file_is_published_from_staging_and_from_another_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let staging = cache.layout().staging_dir();
        assert_eq!(
            mode(&staging),
            0o700,
            "staged writes are nobody else's business"
        );

        let k = key("out/result.parquet");
        let written = staging.join("result.parquet.1");
        fs::write(&written, b"written locally").unwrap();
        fs::set_permissions(&written, fs::Permissions::from_mode(0o600)).unwrap();
        let held = cache
            .publish(&written, &k, &attrs(&k, b"written locally"))
            .unwrap();
        assert!(!written.exists(), "renamed into place");
        assert_eq!(fs::read(&held.cached.path).unwrap(), b"written locally");
        assert!(cache.lookup(&k, 15).is_some());

        // /dev/shm is a tmpfs: a rename from there cannot work, a copy must.
        let foreign = tempfile::tempdir_in("/dev/shm").unwrap();
        assert_ne!(
            fs::metadata(foreign.path()).unwrap().dev(),
            fs::metadata(dir.path()).unwrap().dev(),
            "the test needs /dev/shm on another filesystem than the temporary directory"
        );
        let k2 = key("out/other.bin");
        let source = foreign.path().join("other.bin");
        fs::write(&source, b"from elsewhere").unwrap();
        let held = cache
            .publish(&source, &k2, &attrs(&k2, b"from elsewhere"))
            .unwrap();
        assert_eq!(fs::read(&held.cached.path).unwrap(), b"from elsewhere");
        assert_eq!(
            held.cached.xxh3,
            Some(crate::digest::xxh3_128(b"from elsewhere"))
        );
        assert!(source.exists(), "a copy leaves the source where it was");
        assert_eq!(fs::read_dir(cache.layout().tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn staged_files_survive_start_up_clean_up_and_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let staged = cache.layout().staging_dir().join("pending");
        fs::write(&staged, b"not yet committed").unwrap();
        let stale_tmp = cache.layout().tmp_dir().join("deadbeef.1.0");
        fs::write(&stale_tmp, b"left by a dead process").unwrap();
        drop(cache);
        let cache = Cache::open_bounded(
            dir.path(),
            Bounds {
                max_bytes: Some(0),
                min_free: MinFree::Bytes(0),
            },
        )
        .unwrap();
        assert!(!stale_tmp.exists(), "dead temporaries are removed at start");
        evict::evict(cache.layout(), &cache.bounds, 0).unwrap();
        assert!(staged.exists(), "staging is never cleaned, evicted or gc'd");
    }

    #[tokio::test]
    async fn reservations_count_until_committed_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open_bounded(
            dir.path(),
            Bounds {
                max_bytes: Some(1000),
                min_free: MinFree::Bytes(0),
            },
        )
        .unwrap();
        let err = cache.reserve("huge", 1001).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert!(
            err.to_string().contains("larger than the whole cache"),
            "{err}"
        );
        let a = cache.reserve("a", 600).await.unwrap();
        assert_eq!(cache.reserved.load(Ordering::SeqCst), 600);
        drop(a);
        assert_eq!(cache.reserved.load(Ordering::SeqCst), 0);
        cache.reserve("b", 700).await.unwrap().commit();
        assert_eq!(
            (
                cache.reserved.load(Ordering::SeqCst),
                cache.used.load(Ordering::SeqCst)
            ),
            (0, 700)
        );
    }

    #[tokio::test]
    async fn the_entry_lock_is_exclusive_across_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let k = key("f");
        let held = cache.lock_entry(&k).await.unwrap();
        let other = File::open(cache.layout().entry_lock_path(&k)).unwrap();
        assert!(other.try_lock_exclusive().is_err(), "held by the first");
        drop(held);
        assert!(other.try_lock_exclusive().is_ok(), "free once dropped");
    }
}
