//! Bounds on the cache and least-recently-used eviction across every process sharing it.
//!
//! The index is the directory tree itself: a walk of `v1/` with one `stat` per entry gives
//! sizes and last uses (mtimes), with no hashing and nothing to keep consistent. Evicting
//! runs under `locks/evict.lock` so processes take turns. An entry that is open anywhere
//! is skipped: readers hold a shared `flock` on the cache file, and the evictor only
//! removes a file it can lock exclusively. A reader that opens a file just as it is removed
//! still reads it whole (the unlinked file lives until closed), so eviction never breaks
//! an open file.

use super::layout::Layout;
use fs2::FileExt;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How much free space to keep on the cache's filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    Percent(f64),
}

impl MinFree {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a percentage"))?;
                if !(0.0..100.0).contains(&p) {
                    return Err(format!("{text:?} must be between 0% and 100%"));
                }
                Ok(MinFree::Percent(p))
            }
            None => crate::config::parse_size(text).map(MinFree::Bytes),
        }
    }

    /// The free space to keep on a filesystem of `fs_size` bytes.
    pub fn bytes(&self, fs_size: u64) -> u64 {
        match *self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (fs_size as f64 * p / 100.0) as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Largest total size of the entries; `None` for no limit but free space.
    pub max_bytes: Option<u64>,
    pub min_free: MinFree,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_bytes: None,
            min_free: MinFree::Percent(5.0),
        }
    }
}

/// One complete entry as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStat {
    pub path: PathBuf,
    /// Space used on disk (allocated blocks), what the bound is about.
    pub bytes: u64,
    pub len: u64,
    pub last_use: SystemTime,
}

/// Every complete entry under `v1/`, oldest use first.
pub fn scan(layout: &Layout) -> Vec<EntryStat> {
    let mut entries = Vec::new();
    let mut stack = vec![layout.entries_dir()];
    while let Some(dir) = stack.pop() {
        let Ok(children) = fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            let Ok(meta) = child.metadata() else { continue };
            if meta.is_dir() {
                stack.push(child.path());
            } else if meta.is_file() {
                entries.push(EntryStat {
                    path: child.path(),
                    bytes: meta.blocks() * 512,
                    len: meta.len(),
                    last_use: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
    }
    entries.sort_by_key(|e| e.last_use);
    entries
}

/// Total size and free space of the filesystem holding `path`.
pub fn filesystem_space(path: &Path) -> std::io::Result<(u64, u64)> {
    Ok((fs2::total_space(path)?, fs2::available_space(path)?))
}

/// What an eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub files: usize,
    pub bytes: u64,
    /// Entries that had to stay because they were open.
    pub skipped_in_use: usize,
    /// Total size of the entries left after the pass.
    pub remaining_bytes: u64,
}

/// Removes least-recently-used entries until the cache, plus `incoming` bytes about to be
/// written, fits `bounds`. Returns what it removed; stops early when only open entries
/// remain.
pub fn evict(layout: &Layout, bounds: &Bounds, incoming: u64) -> std::io::Result<Evicted> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(layout.locks_dir().join("evict.lock"))?;
    lock.lock_exclusive()?;
    let entries = scan(layout);
    let mut used: u64 = entries.iter().map(|e| e.bytes).sum();
    let (fs_size, mut available) = filesystem_space(layout.root())?;
    let min_free = bounds.min_free.bytes(fs_size);
    let over = |used: u64, available: u64| {
        bounds.max_bytes.is_some_and(|max| used + incoming > max)
            || available < min_free.saturating_add(incoming)
    };
    let mut evicted = Evicted::default();
    for entry in entries {
        if !over(used, available) {
            break;
        }
        match remove_unless_open(&entry.path) {
            Ok(true) => {
                used = used.saturating_sub(entry.bytes);
                available += entry.bytes;
                evicted.files += 1;
                evicted.bytes += entry.bytes;
                tracing::debug!(path = %entry.path.display(), bytes = entry.bytes, "evicted");
            }
            Ok(false) => evicted.skipped_in_use += 1,
            Err(e) => tracing::warn!(path = %entry.path.display(), error = %e, "could not evict"),
        }
    }
    evicted.remaining_bytes = used;
    Ok(evicted)
}

/// Removes `path` if no process holds it open (shared flock); false when it is in use.
fn remove_unless_open(path: &Path) -> std::io::Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    if file.try_lock_exclusive().is_err() {
        return Ok(false);
    }
    fs::remove_file(path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(layout: &Layout, name: &str, len: usize, age_secs: u64) -> PathBuf {
        let path = layout.entries_dir().join("a/c").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, vec![7u8; len]).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_secs);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(when))
            .unwrap();
        path
    }

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.locks_dir()).unwrap();
        (dir, layout)
    }

    #[test]
    fn evicts_least_recently_used_first_down_to_the_bound() {
        let (_d, layout) = layout();
        let oldest = entry(&layout, "oldest@1", 98_304, 300);
        let middle = entry(&layout, "middle@1", 98_304, 200);
        let newest = entry(&layout, "newest@1", 98_304, 100);
        let bounds = Bounds {
            max_bytes: Some(250_000),
            min_free: MinFree::Bytes(0),
        };
        let evicted = evict(&layout, &bounds, 50_000).unwrap();
        assert_eq!(evicted.files, 1);
        assert!(!oldest.exists() && middle.exists() && newest.exists());
        assert_eq!(
            evicted.remaining_bytes,
            scan(&layout).iter().map(|e| e.bytes).sum::<u64>()
        );
        assert!(evicted.remaining_bytes + 50_000 <= 250_000);
    }

    #[test]
    fn open_entries_are_never_removed() {
        let (_d, layout) = layout();
        let old = entry(&layout, "old@1", 100_000, 300);
        let young = entry(&layout, "young@1", 100_000, 100);
        let reader = File::open(&old).unwrap();
        reader.lock_shared().unwrap();
        let bounds = Bounds {
            max_bytes: Some(0),
            min_free: MinFree::Bytes(0),
        };
        let evicted = evict(&layout, &bounds, 0).unwrap();
        assert_eq!((evicted.files, evicted.skipped_in_use), (1, 1));
        assert!(old.exists() && !young.exists());
    }

    #[test]
    fn min_free_parses_bytes_and_percent() {
        assert_eq!(MinFree::parse("10%").unwrap(), MinFree::Percent(10.0));
        assert_eq!(MinFree::parse("2G").unwrap(), MinFree::Bytes(2 << 30));
        assert!(MinFree::parse("150%").is_err());
        assert_eq!(MinFree::Percent(10.0).bytes(1000), 100);
    }
}
