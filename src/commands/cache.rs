//! `adlsfs cache stats|ls|gc|verify`: inspect and maintain a node cache directory, safely
//! while mounts are using it.

use crate::cache::entry;
use crate::cache::evict::{self, Bounds, EntryStat, Evicted};
use crate::cache::layout::Layout;
use crate::digest::xxh3_128_file;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: usize,
    pub bytes: u64,
    pub oldest_use: Option<SystemTime>,
    pub newest_use: Option<SystemTime>,
}

pub fn stats(layout: &Layout) -> Stats {
    let entries = evict::scan(layout);
    Stats {
        entries: entries.len(),
        bytes: entries.iter().map(|e| e.bytes).sum(),
        oldest_use: entries.first().map(|e| e.last_use),
        newest_use: entries.last().map(|e| e.last_use),
    }
}

/// One entry for `cache ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uri: String,
    pub len: u64,
    pub last_use: SystemTime,
    pub path: PathBuf,
}

/// Entries, most recently used first.
pub fn list(layout: &Layout) -> Vec<Listed> {
    let mut out: Vec<Listed> = evict::scan(layout)
        .into_iter()
        .map(|e| Listed {
            uri: uri_of(layout, &e),
            len: e.len,
            last_use: e.last_use,
            path: e.path,
        })
        .collect();
    out.reverse();
    out
}

/// The blob URI recorded with the entry, else reconstructed from its path.
fn uri_of(layout: &Layout, e: &EntryStat) -> String {
    if let Some(uri) = entry::read_attrs(&e.path).uri {
        return uri;
    }
    let rel = e.path.strip_prefix(layout.entries_dir()).unwrap_or(&e.path);
    let rel = rel.to_string_lossy();
    let without_etag = rel.rsplit_once('@').map_or(rel.as_ref(), |(name, _)| name);
    format!("adls://{without_etag}")
}

/// Evicts least-recently-used entries (never open ones) until `bounds` hold.
pub fn gc(layout: &Layout, bounds: &Bounds) -> std::io::Result<Evicted> {
    evict::evict(layout, bounds, 0)
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Entries whose content no longer matched their recorded digest, now removed.
    pub removed: Vec<String>,
    /// Entries with no recorded digest (a filesystem without xattrs), left alone.
    pub unverifiable: usize,
}

/// Re-hashes every entry against its recorded xxh3_128 and removes those that differ.
pub fn verify(layout: &Layout) -> std::io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for e in evict::scan(layout) {
        let Some(expected) = entry::read_digest(&e.path) else {
            report.unverifiable += 1;
            continue;
        };
        report.checked += 1;
        let actual = match xxh3_128_file(&e.path) {
            Ok((d, _)) => d,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue, // evicted meanwhile
            Err(err) => return Err(err),
        };
        if actual != expected {
            let uri = uri_of(layout, &e);
            std::fs::remove_file(&e.path)?;
            tracing::warn!(path = %e.path.display(), uri = %uri, "corrupt cache entry removed");
            report.removed.push(format!(
                "{uri} ({}): expected xxh3_128 {expected}, found {actual}",
                e.path.display()
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::EntryAttrs;

    #[test]
    fn verify_removes_only_entries_whose_bytes_changed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let base = layout.entries_dir().join("acct/box");
        std::fs::create_dir_all(&base).unwrap();
        let good = base.join("good@1");
        let bad = base.join("bad@1");
        for (path, content) in [(&good, b"good".as_slice()), (&bad, b"bad!".as_slice())] {
            std::fs::write(path, content).unwrap();
            entry::write_attrs(
                path,
                &EntryAttrs {
                    uri: Some(format!(
                        "adls://acct/box/{}",
                        path.file_name().unwrap().to_string_lossy()
                    )),
                    etag: Some("\"1\"".into()),
                    xxh3: Some(crate::digest::xxh3_128(content)),
                },
            );
        }
        assert!(
            entry::read_digest(&good).is_some(),
            "the test filesystem must keep user xattrs"
        );
        std::fs::write(&bad, b"BAD!").unwrap(); // bit rot, same length
        let report = verify(&layout).unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.removed.len(), 1, "{report:?}");
        assert!(report.removed[0].contains("adls://acct/box/bad@1"));
        assert!(good.exists() && !bad.exists());
        let s = stats(&layout);
        assert_eq!(s.entries, 1);
        assert_eq!(list(&layout)[0].uri, "adls://acct/box/good@1");
    }
}
