//! The native fetcher: parallel ranged GETs, each pinned to the blob's ETag with If-Match,
//! streamed into the destination at their offsets.
//!
//! - Memory stays small whatever the file size: each response is streamed and written in
//!   batches of at most [`WRITE_BATCH`] bytes, so at most `parallelism` batches (plus the
//!   HTTP client's buffers) are in memory.
//! - Space is reserved with `fallocate` first, so a full disk fails at once.
//! - Every batch written is recorded in the job's [`Landed`] ranges.
//! - Hashing overlaps the download: a follower hashes the contiguous landed prefix
//!   (through a read-only mapping, no copy), so verification needs no second pass.
//! - A range that meets a transient fault resumes from its first byte not yet written
//!   ([`RetryPolicy::run`]), until the retry budget is spent.
//! - Write-back starts as batches land (`sync_file_range`), so the final fsync has little
//!   left to do.

use super::landed::{Landed, LandedState};
use super::{FetchError, FetchJob, FetchReport, Fetcher, FetcherKind, ProgressSink};
use crate::digest::{Digests, Hasher};
use crate::storage::{BlobMeta, BlobStore, RetryPolicy, StorageError};
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

/// One byte range of one download, and everything its GETs write to.
struct RangeJob<'a> {
    meta: &'a BlobMeta,
    range: Range<u64>,
    file: &'a Arc<File>,
    dest: &'a Path,
    landed: &'a Landed,
    progress: &'a dyn ProgressSink,
    /// Bytes written by all ranges of the download, for progress reports.
    total: &'a AtomicU64,
}

impl RangeJob<'_> {
    /// Writes one batch at `offset` and records it as landed.
    async fn write(&self, data: Bytes, offset: u64) -> Result<u64, FetchError> {
        let n = data.len() as u64;
        write_batch(self.file, data, offset, self.dest).await?;
        self.landed.add(offset..offset + n);
        let now = self.total.fetch_add(n, Ordering::SeqCst) + n;
        self.progress.progress(&self.meta.name, now, self.meta.size);
        Ok(n)
    }
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

    /// Downloads one range into place, resuming after transient faults from the first
    /// byte not yet written, until the retry budget is spent.
    async fn fetch_range(&self, job: RangeJob<'_>) -> Result<(), FetchError> {
        // The first byte not yet written, kept across attempts.
        let written_to = AtomicU64::new(job.range.start);
        let (job, written_to) = (&job, &written_to);
        self.config
            .retry
            .run(|| async move {
                let mut offset = written_to.load(Ordering::SeqCst);
                if offset > job.range.start {
                    tracing::info!(blob = %job.meta.name, range = ?job.range, resume_at = offset, "resuming the range");
                }
                let result = self.stream_into(job, &mut offset).await;
                written_to.store(offset, Ordering::SeqCst);
                result
            })
            .await
    }

    /// One GET of the rest of the range, streamed to disk; `offset` tracks the first byte
    /// not written.
    async fn stream_into(&self, job: &RangeJob<'_>, offset: &mut u64) -> Result<(), FetchError> {
        let (meta, end) = (job.meta, job.range.end);
        let mut body = self
            .store
            .read_stream(&meta.name, *offset..end, &meta.etag)
            .await?;
        let mut batch = BytesMut::new();
        loop {
            let piece = match body.next().await.transpose() {
                Ok(piece) => piece,
                Err(e) => {
                    // Keep what arrived before the fault: the retry resumes after it.
                    if !batch.is_empty() {
                        *offset += job.write(batch.split().freeze(), *offset).await?;
                    }
                    return Err(e.into());
                }
            };
            if let Some(piece) = &piece {
                if *offset + (batch.len() + piece.len()) as u64 > end {
                    return Err(short_body(meta, &job.range, "more bytes than asked for"));
                }
                batch.extend_from_slice(piece);
            }
            if batch.len() >= WRITE_BATCH || (piece.is_none() && !batch.is_empty()) {
                *offset += job.write(batch.split().freeze(), *offset).await?;
            }
            if piece.is_none() {
                break;
            }
        }
        if *offset != end {
            return Err(short_body(
                meta,
                &job.range,
                &format!("the body ended after {} bytes", *offset - job.range.start),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Fetcher for NativeFetcher {
    async fn fetch(&self, job: &FetchJob<'_>) -> Result<FetchReport, FetchError> {
        let (meta, dest) = (job.meta, job.dest);
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
            job.progress.progress(&meta.name, 0, 0);
            return Ok(FetchReport {
                fetcher: FetcherKind::Native,
                digests: Some(Hasher::new(job.hash_md5).finish()),
            });
        }
        reserve_space(&file, meta.size).map_err(|e| FetchError::io(dest, e))?;
        let file = Arc::new(file);
        let (stop_follower, stopped) = tokio::sync::oneshot::channel::<()>();
        let follower = tokio::spawn(follow_and_hash(
            dest.to_path_buf(),
            meta.size,
            job.landed.watch(),
            stopped,
            job.hash_md5,
        ));
        let total = AtomicU64::new(0);
        let download = stream::iter(self.ranges(meta.size))
            .map(|range| {
                self.fetch_range(RangeJob {
                    meta,
                    range,
                    file: &file,
                    dest,
                    landed: job.landed,
                    progress: job.progress,
                    total: &total,
                })
            })
            .buffer_unordered(self.config.parallelism.max(1))
            .try_collect::<()>()
            .await;
        // The follower finishes what has landed, then stops (short, after a failure).
        drop(stop_follower);
        let digests = follower.await.expect("hash follower panicked");
        download?;
        let digests = digests.map_err(|e| FetchError::io(dest, e))?;
        Ok(FetchReport {
            fetcher: FetcherKind::Native,
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

/// Hashes the file's landed prefix as it grows. Returns the digests once all `size`
/// bytes were hashed, or `None` when `stop` came (the download is over) short of that.
async fn follow_and_hash(
    path: std::path::PathBuf,
    size: u64,
    mut landed: tokio::sync::watch::Receiver<LandedState>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    hash_md5: bool,
) -> std::io::Result<Option<Digests>> {
    let reader = Arc::new(File::open(&path)?);
    let mut hasher = Hasher::new(hash_md5);
    let mut hashed = 0u64;
    let mut stopped = false;
    loop {
        let target = landed.borrow_and_update().ranges.prefix();
        if target > hashed {
            let reader = Arc::clone(&reader);
            let from = hashed;
            hasher = tokio::task::spawn_blocking(move || hash_range(&reader, from, target, hasher))
                .await
                .expect("hash task panicked")?;
            hashed = target;
        }
        if hashed == size {
            return Ok(Some(hasher.finish()));
        }
        if stopped && landed.borrow().ranges.prefix() == hashed {
            return Ok(None);
        }
        tokio::select! {
            changed = landed.changed() => {
                if changed.is_err() {
                    return Ok(None);
                }
            }
            _ = &mut stop, if !stopped => stopped = true,
        }
    }
}

/// Feeds bytes `from..to` of the file to the hasher through read-only mappings of at
/// most [`HASH_WINDOW`] bytes (no copy; unmapped as soon as hashed).
fn hash_range(file: &File, from: u64, to: u64, mut hasher: Hasher) -> std::io::Result<Hasher> {
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
        hasher.update(&map[(at - page_start) as usize..]);
        at += len;
    }
    Ok(hasher)
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
        let landed = Landed::new(meta.size);
        let job = FetchJob {
            meta: &meta,
            dest: &dest,
            progress: &super::super::NoProgress,
            landed: &landed,
            hash_md5: true,
        };
        let report = fetcher.fetch(&job).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let digests = report.digests.unwrap();
        assert_eq!(digests.xxh3, crate::digest::xxh3_128(&data));
        assert_eq!(digests.md5, Some(crate::digest::md5(&data)));
        assert!(landed.is_complete(), "every range recorded as landed");
    }
}
