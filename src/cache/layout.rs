//! Where things live in the node cache, fixed from the first cache on:
//!
//! ```text
//! <cache-dir>/v1/<account>/<container>/<blob path>@<etag-token>   complete, verified files
//! <cache-dir>/tmp/                                                downloads in progress
//! <cache-dir>/locks/                                              per-entry and machine-wide locks
//! <cache-dir>/staging/                                            files written through a mount,
//!                                                                 until committed (never cleaned
//!                                                                 up, evicted or verified away)
//! ```
//!
//! Blob-name segments are used as they are when they are safe file names; otherwise (empty,
//! `.`/`..`, a leading `%`, control characters, too long) they are mapped deterministically
//! to a name starting with `%`, which no safe segment does, so mapped and unmapped names
//! never collide and nothing can climb out of the cache.

use crate::digest::xxh3_128;
use std::path::{Path, PathBuf};

pub const VERSION_DIR: &str = "v1";
pub const TMP_DIR: &str = "tmp";
pub const LOCKS_DIR: &str = "locks";
pub const STAGING_DIR: &str = "staging";

/// Longest segment kept as it is. Leaves room under NAME_MAX (255) for `@<etag-token>`.
const MAX_PLAIN_SEGMENT: usize = 180;
/// Longest etag token kept as it is; longer ones are hashed.
const MAX_ETAG_TOKEN: usize = 64;

/// Identifies one version of one blob: a changed blob is a different entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub account: String,
    pub container: String,
    pub blob: String,
    pub etag: String,
}

impl EntryKey {
    /// The entry for the version of a blob `meta` describes, in `location`'s container.
    pub fn for_blob(location: &crate::location::Location, meta: &crate::storage::BlobMeta) -> Self {
        Self {
            account: location.account.clone(),
            container: location.container.clone(),
            blob: meta.name.clone(),
            etag: meta.etag.clone(),
        }
    }

    /// `adls://<account>/<container>/<blob>`, the blob's URI.
    pub fn uri(&self) -> String {
        format!("adls://{}/{}/{}", self.account, self.container, self.blob)
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS_DIR)
    }

    /// Written files awaiting their commit: nothing that cleans, evicts or verifies the
    /// cache looks in here.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    pub fn entries_dir(&self) -> PathBuf {
        self.root.join(VERSION_DIR)
    }

    /// The final path of a complete entry.
    pub fn entry_path(&self, key: &EntryKey) -> PathBuf {
        let mut path = self.entries_dir();
        path.push(map_segment(&key.account));
        path.push(map_segment(&key.container));
        let mut segments: Vec<&str> = key.blob.split('/').collect();
        let file = segments.pop().unwrap_or("");
        for dir in segments {
            path.push(map_segment(dir));
        }
        path.push(format!("{}@{}", map_segment(file), etag_token(&key.etag)));
        path
    }

    /// The lock file serialising downloads of one entry across processes.
    pub fn entry_lock_path(&self, key: &EntryKey) -> PathBuf {
        let id = xxh3_128(
            format!(
                "{}\n{}\n{}\n{}",
                key.account, key.container, key.blob, key.etag
            )
            .as_bytes(),
        );
        self.locks_dir()
            .join(format!("{}.lock", hex(id.as_bytes())))
    }
}

fn is_plain(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && !segment.starts_with('%')
        && segment.len() <= MAX_PLAIN_SEGMENT
        && !segment.chars().any(|c| c.is_control())
}

/// A segment as a file name: itself when plain, else `%` + percent-encoding, or `%h` + a
/// readable prefix + the hash when even that is too long.
pub fn map_segment(segment: &str) -> String {
    if is_plain(segment) {
        return segment.to_string();
    }
    let mut encoded = String::from("%");
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b' ') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if encoded.len() <= MAX_PLAIN_SEGMENT {
        return encoded;
    }
    let readable: String = segment
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    format!(
        "%h{readable}-{}",
        hex(xxh3_128(segment.as_bytes()).as_bytes())
    )
}

/// The etag without quotes, reduced to characters safe in a file name.
fn etag_token(etag: &str) -> String {
    let bare = etag.trim_matches('"');
    let safe = !bare.is_empty()
        && bare.len() <= MAX_ETAG_TOKEN
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        bare.to_string()
    } else {
        format!("h{}", hex(xxh3_128(etag.as_bytes()).as_bytes()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Component;

    fn key(blob: &str, etag: &str) -> EntryKey {
        EntryKey {
            account: "acct".into(),
            container: "box".into(),
            blob: blob.into(),
            etag: etag.into(),
        }
    }

    #[test]
    fn plain_names_are_kept_so_operators_can_find_them() {
        let layout = Layout::new("/cache");
        assert_eq!(
            layout.entry_path(&key("models/v1/weights.bin", "\"0x8DC1A\"")),
            Path::new("/cache/v1/acct/box/models/v1/weights.bin@0x8DC1A")
        );
    }

    #[test]
    fn hostile_names_never_escape_the_cache() {
        let layout = Layout::new("/cache");
        let base = layout.entries_dir().join("acct").join("box");
        for blob in [
            "../../etc/passwd",
            "a/../../b",
            "./x",
            "a//b",
            "/abs",
            "",
            "x/",
            "%2E%2E/y",
            &"long".repeat(100),
            "ctl\u{1}\n",
            "ünï/日本",
        ] {
            let path = layout.entry_path(&key(blob, "\"e\""));
            assert!(path.starts_with(&base), "{blob:?} -> {path:?}");
            let rel = path.strip_prefix(&base).unwrap();
            for c in rel.components() {
                assert!(matches!(c, Component::Normal(_)), "{blob:?} -> {path:?}");
                assert!(c.as_os_str().len() <= 255, "{blob:?} -> {path:?}");
            }
        }
    }

    #[test]
    fn mapping_is_deterministic_and_injective_on_tricky_inputs() {
        let inputs = [
            "",
            ".",
            "..",
            "%",
            "%2E",
            "%2E%2E",
            "a",
            "%a",
            "%25a",
            "a b",
            "a%20b",
            "ctl\u{1}",
            "ctl%01",
            "x".repeat(181).as_str().to_owned().leak(),
            "x".repeat(180).as_str().to_owned().leak(),
        ];
        let mut seen = HashSet::new();
        for s in inputs {
            let mapped = map_segment(s);
            assert_eq!(mapped, map_segment(s));
            assert!(
                seen.insert(mapped.clone()),
                "collision on {s:?} -> {mapped}"
            );
            assert!(!mapped.is_empty() && mapped != "." && mapped != ".." && !mapped.contains('/'));
        }
    }

    #[test]
    fn versions_and_etags_get_distinct_entries() {
        let layout = Layout::new("/c");
        let a = layout.entry_path(&key("f", "\"0x1\""));
        let b = layout.entry_path(&key("f", "\"0x2\""));
        let odd = layout.entry_path(&key("f", "W/\"weird/etag\""));
        assert_ne!(a, b);
        assert!(odd
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("f@h"));
        assert_ne!(
            layout.entry_lock_path(&key("f", "\"0x1\"")),
            layout.entry_lock_path(&key("f", "\"0x2\""))
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    /// Blob names built from hostile pieces: dot segments, empty segments, control
    /// characters, backslashes, percent signs and very long runs.
    fn hostile_name() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            "[\\\\a-z%.\u{1}\u{7f} ]{1,20}",
            "x{200,1000}",
            ".{0,30}",
        ];
        proptest::collection::vec(segment, 1..6).prop_map(|s| s.join("/"))
    }

    proptest! {
        #[test]
        fn no_blob_name_escapes_the_cache(blob in hostile_name(), etag in ".{0,80}") {
            let layout = Layout::new("/cache");
            let base = layout.entries_dir().join("acct").join("box");
            let key = EntryKey { account: "acct".into(), container: "box".into(), blob, etag };
            let path = layout.entry_path(&key);
            prop_assert!(path.starts_with(&base));
            for c in path.strip_prefix(&base).unwrap().components() {
                prop_assert!(matches!(c, Component::Normal(_)), "{:?}", path);
                prop_assert!(c.as_os_str().len() <= 255, "{:?}", path);
            }
        }

        #[test]
        fn distinct_segments_map_to_distinct_names(a in ".{0,300}", b in ".{0,300}") {
            prop_assume!(a != b);
            prop_assert_ne!(map_segment(&a), map_segment(&b));
        }
    }
}
