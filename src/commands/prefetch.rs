//! `adlsfs prefetch`: warm the node cache before an application starts (an init container),
//! with the same fetchers, locks and verification as the mount. A progress bar on a
//! terminal, periodic log lines otherwise; a non-zero exit and a summary naming each
//! failure when any file could not be fetched.

use crate::app::Pipeline;
use crate::cache::layout::EntryKey;
use crate::config::PrefetchConfig;
use crate::fetch::ProgressSink;
use crate::fs::names::posix_name;
use crate::location::Location;
use crate::storage::{BlobMeta, BlobStore};
use anyhow::{Context, Result};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub fn run(config: PrefetchConfig) -> Result<()> {
    let runtime = crate::app::runtime()?;
    runtime.block_on(prefetch(config))
}

/// Every blob under the location that the mount would show, with its path relative to the
/// location.
pub async fn list_all(
    store: &dyn BlobStore,
    location: &Location,
) -> Result<Vec<(String, BlobMeta)>> {
    let root = location.dir_prefix();
    let mut out = Vec::new();
    let mut pending = VecDeque::from([root.clone()]);
    while let Some(prefix) = pending.pop_front() {
        let listing = store
            .list_dir(&prefix)
            .await
            .with_context(|| format!("listing {}", location.blob_uri(&prefix)))?;
        pending.extend(listing.dirs);
        for meta in listing.files {
            if crate::fs::inode::is_folder_marker(&meta) {
                continue; // a directory, not a file to fetch
            }
            let relative = meta.name[root.len()..].to_string();
            if relative.is_empty() || relative.split('/').any(|s| posix_name(s).is_err()) {
                tracing::warn!(blob = %meta.name, "skipped: the mount cannot show this name");
                continue;
            }
            out.push((relative, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Files matching `patterns` (a file, a directory taken recursively, or a glob); all when
/// there are none. Patterns matching nothing are returned as the second value.
pub fn select(
    files: Vec<(String, BlobMeta)>,
    patterns: &[String],
) -> (Vec<(String, BlobMeta)>, Vec<String>) {
    if patterns.is_empty() {
        return (files, Vec::new());
    }
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| p.trim_matches('/').to_string())
        .collect();
    let mut used = vec![false; patterns.len()];
    let selected = files
        .into_iter()
        .filter(|(rel, _)| {
            let mut hit = false;
            for (i, p) in patterns.iter().enumerate() {
                let matches = rel == p
                    || p.is_empty()
                    || rel.starts_with(&format!("{p}/"))
                    || (is_glob(p) && glob_match(p.as_bytes(), rel.as_bytes()));
                if matches {
                    used[i] = true;
                    hit = true;
                }
            }
            hit
        })
        .collect();
    let unmatched = patterns
        .into_iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(p, _)| p)
        .collect();
    (selected, unmatched)
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// `*` and `?` stay within a path segment, `**` spans segments; `[...]` is a character
/// class.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = pattern[2..].strip_prefix(b"/").unwrap_or(&pattern[2..]);
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
        }
        Some(b'*') => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob_match(&pattern[1..], &text[i..])),
        Some(b'?') => !text.is_empty() && text[0] != b'/' && glob_match(&pattern[1..], &text[1..]),
        Some(b'[') => match pattern.iter().position(|&c| c == b']') {
            Some(end) if !text.is_empty() => {
                let class = &pattern[1..end];
                let (negate, class) = match class.first() {
                    Some(b'!') | Some(b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut member = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        member |= (class[i]..=class[i + 2]).contains(&text[0]);
                        i += 3;
                    } else {
                        member |= class[i] == text[0];
                        i += 1;
                    }
                }
                member != negate && glob_match(&pattern[end + 1..], &text[1..])
            }
            _ => false,
        },
        Some(&c) => text.first() == Some(&c) && glob_match(&pattern[1..], &text[1..]),
    }
}

/// Progress across all files: a bar on a terminal, log lines otherwise.
struct Progress {
    per_blob: Mutex<HashMap<String, u64>>,
    done: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressSink for Progress {
    fn progress(&self, blob: &str, done: u64, _total: u64) {
        let mut per_blob = self.per_blob.lock().expect("progress map");
        let last = per_blob.entry(blob.to_string()).or_default();
        let delta = done.saturating_sub(*last);
        *last = done.max(*last);
        self.done.fetch_add(delta, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(delta);
        }
    }
}

async fn prefetch(args: PrefetchConfig) -> Result<()> {
    let store = crate::app::connect(&args.storage, &args.location)?;
    let all = list_all(store.as_ref(), &args.location).await?;
    let (files, unmatched) = select(all, &args.paths);
    let total_bytes: u64 = files.iter().map(|(_, m)| m.size).sum();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid progress template"),
        );
        bar
    });
    let progress = Arc::new(Progress {
        per_blob: Mutex::new(HashMap::new()),
        done: AtomicU64::new(0),
        bar,
    });
    let pipeline = Pipeline::build(store, &args.cache, &args.fetch, Some(progress.clone()))?;
    let started = Instant::now();
    let files_done = Arc::new(AtomicU64::new(0));
    let file_count = files.len() as u64;
    let logger = (!terminal).then(|| {
        let (progress, files_done) = (Arc::clone(&progress), Arc::clone(&files_done));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOG_EVERY).await;
                let done = progress.done.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64() / 1e6;
                eprintln!(
                    "prefetch: {done} of {total_bytes} bytes ({rate:.1} MB/s), {} of {file_count} files",
                    files_done.load(Ordering::Relaxed)
                );
            }
        })
    });
    let results: Vec<(String, Result<bool, String>)> = stream::iter(files)
        .map(|(relative, meta)| {
            let (materialiser, location) = (Arc::clone(&pipeline.materialiser), &args.location);
            let (progress, files_done) = (Arc::clone(&progress), Arc::clone(&files_done));
            async move {
                let key = EntryKey::for_blob(location, &meta);
                let result = materialiser
                    .ensure(&key, &meta)
                    .await
                    .map(|c| c.fetched)
                    .map_err(|e| e.to_string());
                if let Ok(false) = result {
                    // Already cached: count its bytes as done.
                    progress.progress(&meta.name, meta.size, meta.size);
                }
                let n = files_done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(bar) = &progress.bar {
                    bar.set_message(format!("{n}/{file_count} files"));
                }
                (relative, result)
            }
        })
        .buffer_unordered(args.parallel.max(1))
        .collect()
        .await;
    if let Some(logger) = logger {
        logger.abort();
    }
    if let Some(bar) = &progress.bar {
        bar.finish();
    }
    let downloaded = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(true)))
        .count();
    let cached = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(false)))
        .count();
    let mut failures: Vec<String> = results
        .into_iter()
        .filter_map(|(rel, r)| {
            r.err().map(|e| {
                format!(
                    "{}: {e}",
                    args.location.blob_uri(&args.location.blob_name(&rel))
                )
            })
        })
        .collect();
    failures.extend(unmatched.into_iter().map(|p| {
        format!(
            "{p}: no file, directory or glob match under {}",
            args.location
        )
    }));
    eprintln!(
        "prefetch: {} files ({total_bytes} bytes) in {:.1} s into {}: {downloaded} downloaded, {cached} already cached, {} failed",
        downloaded + cached,
        started.elapsed().as_secs_f64(),
        args.cache.dir.display(),
        failures.len()
    );
    if failures.is_empty() {
        return Ok(());
    }
    for f in &failures {
        eprintln!("  FAILED {f}");
    }
    anyhow::bail!(
        "{} of the requested files could not be prefetched",
        failures.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*.csv", "a.csv") && !m("*.csv", "dir/a.csv"));
        assert!(m("**/*.csv", "dir/sub/a.csv") && m("**/*.csv", "a.csv"));
        assert!(m("data/**", "data/x/y") && !m("data/**", "other/x"));
        assert!(m("f?.bin", "f1.bin") && !m("f?.bin", "f12.bin"));
        assert!(
            m("part-[0-3].parquet", "part-2.parquet")
                && !m("part-[!0-3].parquet", "part-2.parquet")
        );
    }

    fn meta(name: &str) -> BlobMeta {
        BlobMeta {
            name: name.into(),
            size: 1,
            last_modified: std::time::SystemTime::UNIX_EPOCH,
            etag: "\"e\"".into(),
            content_md5: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn selection_by_file_directory_and_glob() {
        let files: Vec<_> = ["a.txt", "d/x.csv", "d/sub/y.csv", "e/z.bin"]
            .iter()
            .map(|n| (n.to_string(), meta(n)))
            .collect();
        let names =
            |sel: Vec<(String, BlobMeta)>| sel.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        let (sel, missing) = select(files.clone(), &["d/".into(), "a.txt".into(), "nope".into()]);
        assert_eq!(names(sel), ["a.txt", "d/x.csv", "d/sub/y.csv"]);
        assert_eq!(missing, ["nope"]);
        let (sel, _) = select(files.clone(), &["**/*.csv".into()]);
        assert_eq!(names(sel), ["d/x.csv", "d/sub/y.csv"]);
        let (sel, missing) = select(files, &[]);
        assert_eq!((sel.len(), missing.len()), (4, 0));
    }
}
