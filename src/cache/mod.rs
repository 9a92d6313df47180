//! The node-local cache: complete, verified copies of blob versions.
//!
//! A file appears under its final name only after it was downloaded in full, verified,
//! fsync'ed and renamed from `tmp/` (same filesystem, so the rename is atomic). Concurrent
//! requests for one entry are collapsed: an in-process mutex per entry, then a file lock per
//! entry (`locks/`) so processes sharing the cache directory download each entry once.
//! After taking each lock the final path is checked again: whoever waited finds the file.

pub mod layout;

use crate::digest::Xxh3Digest;
use crate::fetch::verify::{verify_file, Verified};
use crate::fetch::{FetchError, Fetcher};
use crate::storage::BlobMeta;
use fs2::FileExt;
use layout::{EntryKey, Layout};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Extended attribute on a cache file recording the xxh3_128 of its content, so a later
/// process can answer digests without re-hashing.
const DIGEST_XATTR: &str = "user.adlsfs.xxh3_128";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}: {source}")]
    Setup {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl CacheError {
    pub fn is_no_space(&self) -> bool {
        matches!(self, CacheError::Fetch(e) if e.is_no_space())
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
    in_flight: Mutex<HashMap<EntryKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Cache {
    /// Opens (creating) the cache directory and removes temporaries left by dead processes.
    pub fn open(root: &Path, require_digest: bool) -> Result<Self, CacheError> {
        let layout = Layout::new(root);
        for dir in [
            layout.root().to_path_buf(),
            layout.entries_dir(),
            layout.tmp_dir(),
            layout.locks_dir(),
        ] {
            create_private_dir(&dir)?;
        }
        let cache = Self {
            layout,
            require_digest,
            in_flight: Mutex::new(HashMap::new()),
        };
        cache.remove_stale_temporaries();
        Ok(cache)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The verified cache file for `key`, downloading it with `fetcher` when absent.
    pub async fn get_or_fetch(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
    ) -> Result<CachedFile, CacheError> {
        let path = self.layout.entry_path(key);
        if let Some(hit) = lookup(&path, meta.size) {
            return Ok(hit);
        }
        let entry_mutex = {
            let mut map = self.in_flight.lock().expect("in-flight map");
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let result = async {
            let _in_process = entry_mutex.lock().await;
            if let Some(hit) = lookup(&path, meta.size) {
                return Ok(hit);
            }
            let lock_path = self.layout.entry_lock_path(key);
            let lock = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path))
                .await
                .expect("lock task panicked")?;
            if let Some(hit) = lookup(&path, meta.size) {
                return Ok(hit);
            }
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

    async fn download(
        &self,
        key: &EntryKey,
        meta: &BlobMeta,
        fetcher: &dyn Fetcher,
        final_path: &Path,
    ) -> Result<CachedFile, CacheError> {
        let tmp = self.new_temporary(key)?;
        let started = Instant::now();
        let result = async {
            let report = fetcher.fetch(meta, &tmp).await?;
            let (tmp_owned, meta_owned, require) = (tmp.clone(), meta.clone(), self.require_digest);
            let verified = tokio::task::spawn_blocking(move || {
                let verified = verify_file(&tmp_owned, &meta_owned, require)?;
                sync_file(&tmp_owned)?;
                Ok::<Verified, FetchError>(verified)
            })
            .await
            .expect("verify task panicked")?;
            publish(&tmp, final_path, &verified)?;
            Ok((verified, report))
        }
        .await;
        match result {
            Ok((verified, report)) => {
                tracing::info!(
                    blob = %meta.name,
                    bytes = meta.size,
                    fetcher = report.fetcher,
                    verified_by = verified.checked_by,
                    seconds = started.elapsed().as_secs_f64(),
                    "materialised"
                );
                Ok(CachedFile {
                    path: final_path.to_path_buf(),
                    xxh3: Some(verified.xxh3),
                    fetched: true,
                })
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(CacheError::Fetch(e))
            }
        }
    }

    /// A new empty temporary named after the entry's lock, so start-up clean-up can tell
    /// whether a live process still owns it.
    fn new_temporary(&self, key: &EntryKey) -> Result<PathBuf, CacheError> {
        let lock_name = self
            .layout
            .entry_lock_path(key)
            .file_stem()
            .expect("lock file name")
            .to_string_lossy()
            .into_owned();
        let path = self.layout.tmp_dir().join(format!(
            "{lock_name}.{}.{:08x}",
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

    /// Removes temporaries whose entry lock nobody holds (their writer died).
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(self.layout.tmp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lock_id = name.split('.').next().unwrap_or_default();
            let lock_path = self.layout.locks_dir().join(format!("{lock_id}.lock"));
            let free = match File::open(&lock_path) {
                Ok(f) => f.try_lock_exclusive().is_ok(),
                Err(_) => true,
            };
            if free {
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

/// A complete entry at `path`, if there is one of the expected size.
fn lookup(path: &Path, size: u64) -> Option<CachedFile> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() != size {
        return None;
    }
    Some(CachedFile {
        path: path.to_path_buf(),
        xxh3: read_digest_xattr(path),
        fetched: false,
    })
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

/// Makes a verified temporary visible: record its digest, fix its mode, rename it into
/// place and fsync the directory so the rename survives a crash.
fn publish(tmp: &Path, final_path: &Path, verified: &Verified) -> Result<(), FetchError> {
    let parent = final_path.parent().expect("entry path has a parent");
    fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    write_digest_xattr(tmp, &verified.xxh3);
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o644))
        .map_err(|e| FetchError::io(tmp, e))?;
    fs::rename(tmp, final_path).map_err(|e| FetchError::io(final_path, e))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| FetchError::io(parent, e))
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    fs::create_dir_all(dir).map_err(|source| CacheError::Setup {
        path: dir.display().to_string(),
        source,
    })?;
    // Readable by every local user, writable only by the owner.
    let mode = fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o022 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o022)).map_err(|source| {
            CacheError::Setup {
                path: dir.display().to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Best effort: filesystems without user xattrs just re-hash on demand.
fn write_digest_xattr(path: &Path, digest: &Xxh3Digest) {
    if let Err(e) = xattr_set(path, DIGEST_XATTR, digest.as_bytes()) {
        tracing::debug!(path = %path.display(), error = %e, "cache filesystem refused the digest xattr");
    }
}

fn read_digest_xattr(path: &Path) -> Option<Xxh3Digest> {
    let value = xattr_get(path, DIGEST_XATTR).ok()?;
    Xxh3Digest::from_slice(&value).ok()
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = c_path(path)?;
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn xattr_get(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let path = c_path(path)?;
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; 64];
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}
