//! The native fetcher: parallel ranged GETs, each pinned to the blob's ETag with If-Match,
//! streamed into the destination at their offsets.
//!
//! - Memory stays small whatever the file size: each response is streamed and written in
//!   batches of at most [`WRITE_BATCH`] bytes, so at most `parallelism` batches (plus the
//!   HTTP client's buffers) are in memory.
//! - Space is reserved with `fallocate` first, so a full disk fails at once.
//! - Hashing overlaps the download: a follower hashes the contiguous prefix written so
//!   far (through a read-only mapping, no copy), so verification needs no second pass.
//! - Write-back starts as batches land (`sync_file_range`), so the final fsync has little
//!   left to do.

use super::{FetchError, FetchReport, Fetcher, ProgressSink, StreamedDigests};
use crate::digest::{Md5Digest, Xxh3Hasher};
use crate::storage::{jittered, BlobMeta, BlobStore, RetryPolicy, StorageError};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest write handed to the disk at once.
const WRITE_BATCH: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct NativeConfig {
    /// Largest byte range of one GET.
    pub chunk_size: u64,
    /// GETs in flight.
    pub parallelism: usize,
    /// How long a range keeps being retried after transient faults (a broken or stalled
    /// connection, a short body, throttling, server errors); it resumes where it stopped.
    pub retry: RetryPolicy,
}

impl Default for NativeConfig {
    fn default() -> Self {
        // Measured in docs/BENCHMARKS.md.
        Self {
            chunk_size: 32 << 20,
            parallelism: 8,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug)]
pub struct NativeFetcher {
    store: Arc<dyn BlobStore>,
    config: NativeConfig,
}

impl NativeFetcher {
    pub fn new(store: Arc<dyn BlobStore>, config: NativeConfig) -> Self {
        Self { store, config }
    }

    /// Splits `size` into ranges of at most `chunk_size`, at least one per connection when
    /// the file is big enough to keep them all busy.
    fn ranges(&self, size: u64) -> Vec<Range<u64>> {
        let per_connection = size.div_ceil(self.config.parallelism.max(1) as u64);
        let chunk = self
            .config
            .chunk_size
            .min(per_connection.max(WRITE_BATCH as u64))
            .max(1);
        (0..size.div_ceil(chunk))
            .map(|i| i * chunk..((i + 1) * chunk).min(size))
            .collect()
    }
}

impl NativeFetcher {
    /// Downloads one range into place, resuming after transient faults from the first
    /// byte not yet written, until the retry budget is spent.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_range(
        &self,
        meta: &BlobMeta,
        index: usize,
        range: Range<u64>,
        file: &Arc<File>,
        written: &Written,
        dest: &Path,
        on_written: &(dyn Fn(u64) + Sync),
    ) -> Result<(), FetchError> {
        let policy = self.config.retry;
        let started = std::time::Instant::now();
        let mut backoff = policy.initial_backoff;
        let mut offset = range.start;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match self
                .stream_into(
                    meta,
                    index,
                    offset..range.end,
                    file,
                    written,
                    dest,
                    on_written,
                    &mut offset,
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let transient = matches!(&err, FetchError::Storage(e) if e.is_transient());
            let wait = jittered(backoff);
            if !transient || started.elapsed() + wait >= policy.budget {
                if transient {
                    tracing::warn!(blob = %meta.name, range = ?range, attempts, error = %err, "giving up on a range: retry budget spent");
                }
                return Err(err);
            }
            tracing::info!(blob = %meta.name, resume_at = offset, attempt = attempts, error = %err, "transient fault; resuming the range");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }

    /// One GET of `range`, streamed to disk; `offset` tracks the first byte not written.
    #[allow(clippy::too_many_arguments)]
    async fn stream_into(
        &self,
        meta: &BlobMeta,
        index: usize,
        range: Range<u64>,
        file: &Arc<File>,
        written: &Written,
        dest: &Path,
        on_written: &(dyn Fn(u64) + Sync),
        offset: &mut u64,
    ) -> Result<(), FetchError> {
        let mut body = self
            .store
            .read_stream(&meta.name, Some(range.clone()), &meta.etag)
            .await?;
        let mut batch = BytesMut::new();
        loop {
            let piece = match body.next().await.transpose() {
                Ok(piece) => piece,
                Err(e) => {
                    // Keep what arrived before the fault: the retry resumes after it.
                    if !batch.is_empty() {
                        let data = batch.split().freeze();
                        let n = data.len() as u64;
                        write_batch(file, data, *offset, dest).await?;
                        *offset += n;
                        written.add(index, n);
                        on_written(n);
                    }
                    return Err(e.into());
                }
            };
            if let Some(piece) = &piece {
                if *offset + (batch.len() + piece.len()) as u64 > range.end {
                    return Err(short_body(meta, &range, "more bytes than asked for"));
                }
                batch.extend_from_slice(piece);
            }
            if batch.len() >= WRITE_BATCH || (piece.is_none() && !batch.is_empty()) {
                let data = batch.split().freeze();
                let n = data.len() as u64;
                write_batch(file, data, *offset, dest).await?;
                *offset += n;
                written.add(index, n);
                on_written(n);
            }
            if piece.is_none() {
                break;
            }
        }
        if *offset != range.end {
            return Err(short_body(
                meta,
                &range,
                &format!("the body ended after {} bytes", *offset - range.start),
            ));
        }
        Ok(())
    }
}

/// Bytes written per range, and the length of the fully written prefix of the file.
struct Written {
    ranges: Vec<Range<u64>>,
    done: Vec<AtomicU64>,
    prefix: tokio::sync::watch::Sender<u64>,
}

impl Written {
    fn add(&self, range_index: usize, n: u64) {
        self.done[range_index].fetch_add(n, Ordering::SeqCst);
        let mut prefix = 0;
        for (r, done) in self.ranges.iter().zip(&self.done) {
            let d = done.load(Ordering::SeqCst);
            prefix += d;
            if d < r.end - r.start {
                break;
            }
        }
        self.prefix.send_if_modified(|p| {
            let grew = prefix > *p;
            *p = prefix.max(*p);
            grew
        });
    }
}

#[async_trait]
impl Fetcher for NativeFetcher {
    async fn fetch(
        &self,
        meta: &BlobMeta,
        dest: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<FetchReport, FetchError> {
        let want_md5 = super::verify::needs_md5(meta);
        // Truncate: a fallback after a failed azcopy run may find a partial file here.
        let file = File::options()
            .write(true)
            .truncate(true)
            .open(dest)
            .map_err(|e| FetchError::io(dest, e))?;
        if meta.size == 0 {
            // Range requests on an empty blob are answered 416: read it whole.
            let data = self.store.read(&meta.name, None, &meta.etag).await?;
            if !data.is_empty() {
                return Err(FetchError::SizeMismatch {
                    blob: meta.name.clone(),
                    expected: 0,
                    actual: data.len() as u64,
                });
            }
            progress.progress(&meta.name, 0, 0);
            return Ok(FetchReport {
                fetcher: "native",
                digests: Some(StreamedDigests::of(&[], want_md5)),
            });
        }
        reserve_space(&file, meta.size).map_err(|e| FetchError::io(dest, e))?;
        let file = Arc::new(file);
        let ranges = self.ranges(meta.size);
        let (prefix, prefix_rx) = tokio::sync::watch::channel(0u64);
        let written = Arc::new(Written {
            done: ranges.iter().map(|_| AtomicU64::new(0)).collect(),
            ranges: ranges.clone(),
            prefix,
        });
        let follower = tokio::spawn(follow_and_hash(
            dest.to_path_buf(),
            meta.size,
            prefix_rx,
            want_md5,
        ));
        let total = &AtomicU64::new(0);
        let download = stream::iter(ranges.into_iter().enumerate())
            .map(|(index, range)| {
                let (file, written) = (Arc::clone(&file), Arc::clone(&written));
                async move {
                    self.fetch_range(meta, index, range, &file, &written, dest, &|n| {
                        let now = total.fetch_add(n, Ordering::SeqCst) + n;
                        progress.progress(&meta.name, now, meta.size);
                    })
                    .await
                }
            })
            .buffer_unordered(self.config.parallelism.max(1))
            .try_collect::<()>()
            .await;
        // Closing the channel lets the follower finish (or give up after a failure).
        drop(written);
        let digests = follower.await.expect("hash follower panicked");
        download?;
        let digests = digests.map_err(|e| FetchError::io(dest, e))?;
        Ok(FetchReport {
            fetcher: "native",
            digests,
        })
    }
}

fn short_body(meta: &BlobMeta, range: &Range<u64>, what: &str) -> FetchError {
    FetchError::Storage(StorageError::Service {
        what: meta.name.clone(),
        status: 206,
        code: "ShortBody".into(),
        message: format!("range {range:?}: {what}"),
    })
}

/// Writes one batch at its offset and starts its write-back, off the async threads.
async fn write_batch(
    file: &Arc<File>,
    data: Bytes,
    offset: u64,
    dest: &Path,
) -> Result<(), FetchError> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        file.write_all_at(&data, offset)?;
        // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only starts write-back.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                data.len() as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        Ok::<(), std::io::Error>(())
    })
    .await
    .expect("write task panicked")
    .map_err(|e| FetchError::io(dest, e))
}

/// Bytes mapped at once for hashing: small, so mapped pages never pile up in the
/// daemon's resident set, large enough that mapping costs nothing measurable.
const HASH_WINDOW: u64 = 16 << 20;

/// Hashes the file's written prefix as it grows. Returns the digests once all `size`
/// bytes were hashed, or `None` when the download stopped short.
async fn follow_and_hash(
    path: std::path::PathBuf,
    size: u64,
    mut prefix: tokio::sync::watch::Receiver<u64>,
    want_md5: bool,
) -> std::io::Result<Option<StreamedDigests>> {
    let reader = Arc::new(File::open(&path)?);
    let mut state = (
        Xxh3Hasher::new(),
        want_md5.then(<md5::Md5 as md5::Digest>::new),
    );
    let mut hashed = 0u64;
    loop {
        let target = *prefix.borrow_and_update();
        if target > hashed {
            let reader = Arc::clone(&reader);
            let from = hashed;
            state = tokio::task::spawn_blocking(move || hash_range(&reader, from, target, state))
                .await
                .expect("hash task panicked")?;
            hashed = target;
        }
        if hashed == size {
            let (xxh3, md5) = state;
            return Ok(Some(StreamedDigests {
                xxh3: xxh3.finish(),
                md5: md5.map(|m| Md5Digest(md5::Digest::finalize(m).into())),
            }));
        }
        if prefix.changed().await.is_err() && *prefix.borrow() == hashed {
            return Ok(None);
        }
    }
}

type HashState = (Xxh3Hasher, Option<md5::Md5>);

/// Feeds bytes `from..to` of the file to the hashers through read-only mappings of at
/// most [`HASH_WINDOW`] bytes (no copy; unmapped as soon as hashed).
fn hash_range(
    file: &File,
    from: u64,
    to: u64,
    (mut xxh3, mut md5): HashState,
) -> std::io::Result<HashState> {
    let mut at = from;
    while at < to {
        let len = (to - at).min(HASH_WINDOW);
        // Mappings start on a page boundary.
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let page_start = at - at % page;
        // SAFETY: the temporary is private to this process (mode 0600), the mapped range
        // is already written and no longer changes; the mapping is read-only and dropped
        // at the end of this iteration.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(page_start)
                .len((at - page_start + len) as usize)
                .map(file)?
        };
        let bytes = &map[(at - page_start) as usize..];
        xxh3.update(bytes);
        if let Some(m) = md5.as_mut() {
            md5::Digest::update(m, bytes);
        }
        at += len;
    }
    Ok((xxh3, md5))
}

/// Allocates the file's blocks up front, so a full disk fails now rather than after
/// minutes of download. (fs2's `allocate` loses posix_fallocate's error code.)
fn reserve_space(file: &File, size: u64) -> std::io::Result<()> {
    // SAFETY: a valid open file descriptor; mode 0 only allocates.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without fallocate: just size the file; a full disk shows on write.
        Some(libc::EOPNOTSUPP) => file.set_len(size),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn fetcher(chunk_size: u64, parallelism: usize) -> NativeFetcher {
        NativeFetcher::new(
            Arc::new(MemoryStore::new()),
            NativeConfig {
                chunk_size,
                parallelism,
                ..NativeConfig::default()
            },
        )
    }

    #[test]
    fn ranges_cover_the_file_exactly_and_keep_every_connection_busy() {
        let f = fetcher(32 << 20, 8);
        for size in [1, 1000, (1 << 20) + 1, 100 << 20, 1 << 30] {
            let ranges = f.ranges(size);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, size);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            assert!(ranges.iter().all(|r| r.end - r.start <= 32 << 20));
        }
        assert_eq!(f.ranges(1 << 30).len(), 32);
        assert_eq!(f.ranges(100 << 20).len(), 8, "spread over all connections");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn streamed_digests_equal_a_hash_of_the_whole_file() {
        let store = Arc::new(MemoryStore::new());
        let data: Vec<u8> = (0..(5 << 20) + 77)
            .map(|i: u32| (i * 31 % 251) as u8)
            .collect();
        let meta = store
            .put("b", Bytes::from(data.clone()), &Default::default())
            .await
            .unwrap();
        let fetcher = NativeFetcher::new(
            store.clone(),
            NativeConfig {
                chunk_size: 1 << 20,
                parallelism: 3,
                ..NativeConfig::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        std::fs::write(&dest, b"").unwrap();
        let report = fetcher
            .fetch(&meta, &dest, &super::super::NoProgress)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let digests = report.digests.unwrap();
        assert_eq!(digests.xxh3, crate::digest::xxh3_128(&data));
        // MemoryStore records Content-MD5 but no xxh3: the MD5 is computed too.
        assert_eq!(digests.md5, Some(crate::digest::md5(&data)));
    }
}
