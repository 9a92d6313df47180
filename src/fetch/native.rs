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
use super::plan::Plan;
use super::{EarlyReads, FetchError, FetchJob, FetchReport, Fetcher, FetcherKind, ProgressSink};
use crate::digest::{Digests, Hasher};
use crate::storage::{BlobMeta, BlobStore, RetryPolicy, StorageError, MAX_CHECKED_RANGE};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
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
    /// Fetch ranges of at most [`MAX_CHECKED_RANGE`] (4 MiB) and check each against the
    /// service's range MD5 before it counts as landed, when readers may be served before
    /// the whole-file check (not for prefetch): for plain-HTTP endpoints, where nothing
    /// else protects such a byte.
    pub check_ranges: bool,
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
            check_ranges: false,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Debug)]
pub struct NativeFetcher {
    store: Arc<dyn BlobStore>,
    config: NativeConfig,
}

/// Smallest range a reader's demand fetches: a footer or a random read costs one short
/// GET, however small the read.
pub const DEMAND_GRANULE: u64 = 256 << 10;

/// Demand GETs in flight beside the background ones.
const MAX_DEMANDS: usize = 4;

/// What every range of one download writes to and reports into.
struct Shared<'a> {
    meta: &'a BlobMeta,
    file: Arc<File>,
    dest: &'a Path,
    landed: &'a Arc<Landed>,
    early: Option<&'a dyn EarlyReads>,
    /// Ranges are checked against the range MD5: they may be served before the
    /// whole-file check, and nothing else protects them in transit.
    checked: bool,
    progress: &'a dyn ProgressSink,
    /// Bytes written by all ranges of the download, for progress reports.
    total: AtomicU64,
}

impl Shared<'_> {
    /// The service answered a GET for the pinned version: readers may come in.
    fn confirmed(&self) {
        if self.landed.confirm() {
            if let Some(early) = self.early {
                early.readable(self.landed, self.dest);
            }
        }
    }

    /// Writes one batch at `offset` and records it as landed.
    async fn write(&self, data: Bytes, offset: u64) -> Result<u64, FetchError> {
        let n = data.len() as u64;
        write_batch(&self.file, data, offset, self.dest).await?;
        self.landed.add(offset..offset + n);
        let now = self.total.fetch_add(n, Ordering::SeqCst) + n;
        self.progress.progress(&self.meta.name, now, self.meta.size);
        Ok(n)
    }
}

/// Who asked for a range: the background order or a waiting reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claimant {
    Background,
    Demand,
}

impl NativeFetcher {
    pub fn new(store: Arc<dyn BlobStore>, config: NativeConfig) -> Self {
        Self { store, config }
    }

    /// The background's piece size: at most `chunk_size`, small enough that every
    /// connection gets work on a smaller file.
    fn piece_size(&self, size: u64, checked: bool) -> u64 {
        let per_connection = size.div_ceil(self.config.parallelism.max(1) as u64);
        let chunk = match checked {
            true => self.config.chunk_size.min(MAX_CHECKED_RANGE),
            false => self.config.chunk_size,
        };
        chunk.min(per_connection.max(WRITE_BATCH as u64)).max(1)
    }

    /// Downloads one range into place: checked piece by piece when ranges are checked,
    /// else streamed, resuming after transient faults from the first byte not yet
    /// written, until the retry budget is spent.
    async fn fetch_range(&self, job: &Shared<'_>, range: Range<u64>) -> Result<(), FetchError> {
        if job.checked {
            return self.fetch_checked(job, range).await;
        }
        // The first byte not yet written, kept across attempts.
        let written_to = AtomicU64::new(range.start);
        let (range, written_to) = (&range, &written_to);
        self.config
            .retry
            .run(|| async move {
                let mut offset = written_to.load(Ordering::SeqCst);
                if offset > range.start {
                    tracing::info!(blob = %job.meta.name, ?range, resume_at = offset, "resuming the range");
                }
                let result = self.stream_into(job, range, &mut offset).await;
                written_to.store(offset, Ordering::SeqCst);
                result
            })
            .await
    }

    /// Fetches `range` as GETs of at most [`MAX_CHECKED_RANGE`], each compared with the
    /// service's MD5 of it before it is written and counts as landed.
    async fn fetch_checked(&self, job: &Shared<'_>, range: Range<u64>) -> Result<(), FetchError> {
        let mut at = range.start;
        while at < range.end {
            let piece = at..range.end.min(at + MAX_CHECKED_RANGE);
            let data = self
                .checked_piece(job.meta, &piece, &|| job.confirmed())
                .await?;
            job.write(data, piece.start).await?;
            at = piece.end;
        }
        Ok(())
    }

    /// One piece of at most [`MAX_CHECKED_RANGE`], whose bytes matched the MD5 the service
    /// sent for them. A piece that fails the check, comes short or breaks off is fetched
    /// again whole, within the retry budget. `confirmed` is told when the service has
    /// answered for the pinned version.
    pub(super) async fn checked_piece(
        &self,
        meta: &BlobMeta,
        piece: &Range<u64>,
        confirmed: &(dyn Fn() + Sync),
    ) -> Result<Bytes, FetchError> {
        self.config
            .retry
            .run(|| async move {
                let got = self
                    .store
                    .read_range_md5(&meta.name, piece.clone(), &meta.etag)
                    .await?;
                confirmed();
                let failed = |what: String| {
                    tracing::warn!(blob = %meta.name, range = ?piece, %what, "a range failed its check; fetching it again");
                    FetchError::RangeCheck { blob: meta.name.clone(), range: piece.clone(), what }
                };
                let expected = piece.end - piece.start;
                if got.data.len() as u64 != expected {
                    return Err(failed(format!("{} bytes arrived, {expected} expected", got.data.len())));
                }
                let Some(sent) = got.md5 else {
                    return Err(failed("the service sent no Content-MD5 for it".into()));
                };
                let data = got.data;
                let (actual, data) = tokio::task::spawn_blocking(move || (crate::digest::md5(&data), data))
                    .await
                    .expect("MD5 task panicked");
                if actual != sent {
                    return Err(failed(format!("its MD5 is {actual}, the service sent {sent}")));
                }
                Ok(data)
            })
            .await
    }

    /// One GET of the rest of the range, streamed to disk; `offset` tracks the first byte
    /// not written.
    async fn stream_into(
        &self,
        job: &Shared<'_>,
        range: &Range<u64>,
        offset: &mut u64,
    ) -> Result<(), FetchError> {
        let (meta, end) = (job.meta, range.end);
        let mut body = self
            .store
            .read_stream(&meta.name, *offset..end, &meta.etag)
            .await?;
        // The service answered for the pinned version.
        job.confirmed();
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
                    return Err(short_body(meta, range, "more bytes than asked for"));
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
                range,
                &format!("the body ended after {} bytes", *offset - range.start),
            ));
        }
        Ok(())
    }

    /// Fetches every byte once: `parallelism` background pieces in flight, in order, plus
    /// up to [`MAX_DEMANDS`] ranges readers are waiting for, fetched at once.
    async fn fetch_all(&self, job: &Shared<'_>) -> Result<(), FetchError> {
        let size = job.meta.size;
        let plan = Plan::new(size);
        let piece = self.piece_size(size, job.checked);
        let parallelism = self.config.parallelism.max(1);
        let mut running = FuturesUnordered::new();
        let (mut background, mut demands) = (0usize, 0usize);
        let fetch = |who: Claimant, range: Range<u64>| async move {
            (who, self.fetch_range(job, range).await)
        };
        loop {
            while background < parallelism {
                let Some(range) = plan.claim_next(piece) else {
                    break;
                };
                running.push(fetch(Claimant::Background, range));
                background += 1;
            }
            if running.is_empty() && plan.all_claimed() {
                return Ok(());
            }
            tokio::select! {
                Some((who, result)) = running.next() => {
                    result?;
                    match who {
                        Claimant::Background => background -= 1,
                        Claimant::Demand => demands -= 1,
                    }
                }
                wanted = job.landed.next_demands(), if demands < MAX_DEMANDS && !plan.all_claimed() => {
                    for want in wanted {
                        for range in plan.claim_demand(want, DEMAND_GRANULE) {
                            running.push(fetch(Claimant::Demand, range));
                            demands += 1;
                        }
                    }
                }
            }
        }
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
            if job.landed.confirm() {
                if let Some(early) = job.early {
                    early.readable(job.landed, dest);
                }
            }
            job.progress.progress(&meta.name, 0, 0);
            return Ok(FetchReport {
                fetcher: FetcherKind::Native,
                digests: Some(Hasher::new(job.hash_md5).finish()),
            });
        }
        reserve_space(&file, meta.size).map_err(|e| FetchError::io(dest, e))?;
        let (stop_follower, stopped) = tokio::sync::oneshot::channel::<()>();
        let follower = tokio::spawn(follow_and_hash(
            dest.to_path_buf(),
            meta.size,
            job.landed.watch(),
            stopped,
            job.hash_md5,
        ));
        let shared = Shared {
            meta,
            file: Arc::new(file),
            dest,
            landed: job.landed,
            early: job.early,
            checked: self.config.check_ranges && job.early.is_some(),
            progress: job.progress,
            total: AtomicU64::new(0),
        };
        let download = self.fetch_all(&shared).await;
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
    fn pieces_are_at_most_a_chunk_and_keep_every_connection_busy() {
        let f = fetcher(32 << 20, 8);
        assert_eq!(f.piece_size(1 << 30, false), 32 << 20);
        assert_eq!(
            f.piece_size(1 << 30, true),
            4 << 20,
            "checked: at most 4 MiB"
        );
        assert_eq!(
            f.piece_size(100 << 20, false),
            (100 << 20) / 8,
            "spread over all connections"
        );
        assert_eq!(
            f.piece_size(1000, false),
            WRITE_BATCH as u64,
            "no piece smaller than a batch"
        );
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
        let landed = Arc::new(Landed::new(meta.size));
        let job = FetchJob {
            meta: &meta,
            dest: &dest,
            progress: &super::super::NoProgress,
            landed: &landed,
            hash_md5: true,
            early: None,
        };
        let report = fetcher.fetch(&job).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let digests = report.digests.unwrap();
        assert_eq!(digests.xxh3, crate::digest::xxh3_128(&data));
        assert_eq!(digests.md5, Some(crate::digest::md5(&data)));
        assert!(landed.is_complete(), "every range recorded as landed");
    }
}
