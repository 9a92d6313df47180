//! `adlsfs ls`: one directory level, or a whole subtree, straight from the service.

use crate::storage::{BlobMeta, BlobStore, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::VecDeque;

/// One line of output: a blob or a sub-prefix, named relative to the listed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { relative: String, meta: BlobMeta },
    Dir { relative: String },
}

/// Lists `prefix` (empty or ending in `/`), descending into sub-prefixes when `recursive`.
pub async fn list(store: &dyn BlobStore, prefix: &str, recursive: bool) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut pending = VecDeque::from([prefix.to_string()]);
    while let Some(dir) = pending.pop_front() {
        let listing = store.list_dir(&dir).await?;
        for meta in listing.files {
            let relative = meta.name[prefix.len()..].to_string();
            out.push(Entry::File { relative, meta });
        }
        for sub in listing.dirs {
            out.push(Entry::Dir {
                relative: sub[prefix.len()..].to_string(),
            });
            if recursive {
                pending.push_back(sub);
            }
        }
    }
    Ok(out)
}

pub fn format_entry(entry: &Entry, long: bool) -> String {
    match (entry, long) {
        (Entry::Dir { relative }, false) | (Entry::File { relative, .. }, false) => {
            relative.clone()
        }
        (Entry::Dir { relative }, true) => format!("{:>14}  {:<20}  {relative}", "-", "-"),
        (Entry::File { relative, meta }, true) => {
            let mtime: DateTime<Utc> = meta.last_modified.into();
            let digest = match meta.xxh3() {
                Ok(Some(d)) => format!("xxh3_128={d}"),
                Ok(None) => "xxh3_128=-".to_string(),
                Err(e) => format!("xxh3_128=invalid({e})"),
            };
            format!(
                "{:>14}  {:<20}  {relative}  {digest}",
                meta.size,
                mtime.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn lists_one_level_or_recursively_relative_to_the_prefix() {
        let store = MemoryStore::new();
        for name in [
            "p/a.txt",
            "p/sub/b.txt",
            "p/sub/deeper/c.txt",
            "q/other.txt",
        ] {
            store
                .put(name, Bytes::from_static(b"x"), &Default::default())
                .await
                .unwrap();
        }
        let names = |entries: Vec<Entry>| -> Vec<String> {
            entries.iter().map(|e| format_entry(e, false)).collect()
        };
        assert_eq!(
            names(list(&store, "p/", false).await.unwrap()),
            ["a.txt", "sub/"]
        );
        assert_eq!(
            names(list(&store, "p/", true).await.unwrap()),
            [
                "a.txt",
                "sub/",
                "sub/b.txt",
                "sub/deeper/",
                "sub/deeper/c.txt"
            ]
        );
        let long = list(&store, "p/", false).await.unwrap();
        assert!(format_entry(&long[0], true).contains("xxh3_128=-"));
    }
}
