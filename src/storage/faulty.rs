//! The fault-injection wrapper for fast tests: [`FaultyStore`] wraps any [`BlobStore`] and,
//! per kind of operation, fails the next calls with a chosen error, delays them, or
//! damages the bytes that reads return; it can report a Content-MD5 the blobs do not have;
//! and it counts calls and bytes served. It plays the role mountpoint-s3's
//! `failure_client.rs` and object_store's `throttle.rs` play there:
//! the layers above storage (fetch, cache, mount, commits) are tested against exact,
//! repeatable faults without a network in the loop; the proxy in the integration tests
//! covers what only real connections show.

use super::{
    BlobMeta, BlobStore, BlobWrite, BlockId, ByteStream, CheckedRange, DirListing, Result,
    StagedBlock, StorageError,
};
use crate::digest::Md5Digest;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A number of calls that never runs out.
pub const ALWAYS: usize = usize::MAX;

/// The kinds of operation faults are set for and calls are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    List,
    Head,
    /// [`BlobStore::read`], [`BlobStore::read_stream`] and [`BlobStore::read_range_md5`].
    Read,
    /// [`BlobStore::put_if`] (and so `put`, and small files' `put_file`).
    Put,
    PutBlock,
    /// [`BlobStore::put_block_list`].
    Commit,
}

/// A canned failure, built afresh for each call it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 503 ServerBusy: transient, so retrying callers retry.
    Transient,
    /// No answer at all (a refused or broken connection): transient.
    Unreachable,
    /// The call reaches the store and takes effect, then its answer is lost (a transient
    /// error): what a retried write must cope with.
    LostAnswer,
    Changed,
    NotFound,
    AlreadyExists,
    /// 403 AuthenticationFailed.
    Auth,
}

impl Fault {
    fn error(&self, name: &str) -> StorageError {
        let name = name.to_string();
        match self {
            Fault::Transient => StorageError::Service {
                what: name,
                status: 503,
                code: "ServerBusy".into(),
                message: "injected".into(),
            },
            Fault::Unreachable | Fault::LostAnswer => unreachable(format!("{self:?} ({name})")),
            Fault::Changed => StorageError::Changed {
                name,
                etag: String::new(),
            },
            Fault::NotFound => StorageError::NotFound { name },
            Fault::AlreadyExists => StorageError::AlreadyExists { name },
            Fault::Auth => StorageError::Auth {
                what: name,
                status: 403,
                code: "AuthenticationFailed".into(),
            },
        }
    }
}

fn unreachable(cause: String) -> StorageError {
    StorageError::Unreachable {
        endpoint: "faulty-store".into(),
        attempts: 1,
        elapsed: Duration::ZERO,
        cause: format!("injected: {cause}"),
    }
}

/// Damage done to the bytes a read returns. Offsets count from the start of the range
/// read, except [`Damage::FlipByte`]'s, which is a position in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Inverts the byte at this offset of the blob, in a read that covers it.
    FlipByte(u64),
    /// Ends the body after this many bytes, without an error (a short body).
    Truncate(u64),
    /// Serves this many bytes, then fails with a transient error: a stream yields the
    /// bytes then the error, [`BlobStore::read`] just the error.
    CutAfter(u64),
}

/// A [`BlobStore`] that injects the faults it is told to into calls to another one.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn BlobStore>,
    rules: Mutex<Rules>,
    bytes_read: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Rules {
    /// Per operation, faults for the next calls: (fault, calls left), first one first.
    failures: HashMap<Op, VecDeque<(Fault, usize)>>,
    delays: HashMap<Op, Duration>,
    damage: VecDeque<(Damage, usize)>,
    /// The Content-MD5 listings and HEADs report instead of the real one.
    md5: Option<Option<Md5Digest>>,
    calls: HashMap<Op, u64>,
}

/// Takes one use of the first rule of `queue`, dropping rules that are used up.
fn take<T: Clone>(queue: &mut VecDeque<(T, usize)>) -> Option<T> {
    let (rule, left) = queue.front_mut()?;
    let rule = rule.clone();
    *left = left.saturating_sub(1);
    if *left == 0 {
        queue.pop_front();
    }
    Some(rule)
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self {
            inner,
            rules: Mutex::default(),
            bytes_read: Arc::default(),
        }
    }

    /// The next `times` calls of `op` fail with `fault` (after rules set before).
    pub fn fail(&self, op: Op, times: usize, fault: Fault) {
        let mut rules = self.rules();
        rules
            .failures
            .entry(op)
            .or_default()
            .push_back((fault, times));
    }

    /// Calls of `op` stop failing: the faults still set for it are dropped.
    pub fn heal(&self, op: Op) {
        self.rules().failures.remove(&op);
    }

    /// Every later call of `op` waits `delay` first (`Duration::ZERO` to stop).
    pub fn delay(&self, op: Op, delay: Duration) {
        self.rules().delays.insert(op, delay);
    }

    /// The next `times` successful reads (of any kind) return bytes damaged by `damage`.
    /// A [`BlobStore::read_range_md5`] keeps the MD5 the wrapped store reported: damage in
    /// transit, the header intact.
    pub fn damage_reads(&self, times: usize, damage: Damage) {
        self.rules().damage.push_back((damage, times));
    }

    /// From now on listings and HEADs report `md5` as every blob's Content-MD5 (`None`:
    /// none), for blobs the wrapped store cannot hold: no MD5 at all, or a wrong one.
    pub fn report_md5(&self, md5: Option<Md5Digest>) {
        self.rules().md5 = Some(md5);
    }

    /// `meta` with the Content-MD5 [`FaultyStore::report_md5`] set, if any.
    fn reported(&self, mut meta: BlobMeta) -> BlobMeta {
        if let Some(md5) = self.rules().md5 {
            meta.content_md5 = md5;
        }
        meta
    }

    /// Calls of `op` so far, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.rules().calls.get(&op).copied().unwrap_or(0)
    }

    /// Bytes handed out by reads so far, after any damage.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().expect("faulty store rules")
    }

    /// Counts the call, waits its delay, then runs it or fails it as the rules say.
    async fn call<T>(
        &self,
        op: Op,
        name: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let (delay, fault) = {
            let mut rules = self.rules();
            *rules.calls.entry(op).or_default() += 1;
            let fault = rules.failures.get_mut(&op).and_then(take);
            (rules.delays.get(&op).copied(), fault)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match fault {
            None => call.await,
            Some(Fault::LostAnswer) => call.await.and(Err(Fault::LostAnswer.error(name))),
            Some(fault) => Err(fault.error(name)),
        }
    }

    /// A body read whole, after the next damage rule (and counted).
    fn damaged(&self, name: &str, range: &Option<Range<u64>>, data: Bytes) -> Result<Bytes> {
        let mut damager = self.damager(name, range);
        let mut out = BytesMut::new();
        for piece in damager.apply(data) {
            out.extend_from_slice(&piece?);
        }
        Ok(out.freeze())
    }

    fn damager(&self, name: &str, range: &Option<Range<u64>>) -> Damager {
        Damager {
            damage: take(&mut self.rules().damage),
            position: range.as_ref().map_or(0, |r| r.start),
            served: 0,
            finished: false,
            name: name.to_string(),
            bytes_read: Arc::clone(&self.bytes_read),
        }
    }
}

/// Applies one read's [`Damage`] to its body, piece by piece.
struct Damager {
    damage: Option<Damage>,
    /// Blob offset of the next byte.
    position: u64,
    served: u64,
    finished: bool,
    name: String,
    bytes_read: Arc<AtomicU64>,
}

impl Damager {
    /// What the reader gets for the next piece of the body; after an end or an error,
    /// [`Damager::finished`] is set and nothing more is to be served.
    fn apply(&mut self, mut piece: Bytes) -> Vec<Result<Bytes>> {
        let len = piece.len() as u64;
        let mut tail = None;
        match self.damage {
            Some(Damage::FlipByte(at)) if (self.position..self.position + len).contains(&at) => {
                let mut flipped = BytesMut::from(&piece[..]);
                flipped[(at - self.position) as usize] ^= 0xFF;
                piece = flipped.freeze();
            }
            Some(Damage::Truncate(n) | Damage::CutAfter(n)) if self.served + len > n => {
                piece.truncate((n - self.served) as usize);
                self.finished = true;
                if let Some(Damage::CutAfter(_)) = self.damage {
                    tail = Some(Err(unreachable(format!(
                        "body of {} cut after {n} bytes",
                        self.name
                    ))));
                }
            }
            _ => {}
        }
        self.position += len;
        self.served += piece.len() as u64;
        self.bytes_read
            .fetch_add(piece.len() as u64, Ordering::SeqCst);
        let head = (!piece.is_empty()).then_some(Ok(piece));
        head.into_iter().chain(tail).collect()
    }
}

#[async_trait]
impl BlobStore for FaultyStore {
    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let mut listing = self
            .call(Op::List, prefix, self.inner.list_dir(prefix))
            .await?;
        listing.files = listing
            .files
            .into_iter()
            .map(|m| self.reported(m))
            .collect();
        Ok(listing)
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        let meta = self.call(Op::Head, name, self.inner.head(name)).await?;
        Ok(self.reported(meta))
    }

    async fn read(&self, name: &str, range: Option<Range<u64>>, etag: &str) -> Result<Bytes> {
        let read = self.inner.read(name, range.clone(), etag);
        let data = self.call(Op::Read, name, read).await?;
        self.damaged(name, &range, data)
    }

    async fn read_range_md5(
        &self,
        name: &str,
        range: Range<u64>,
        etag: &str,
    ) -> Result<CheckedRange> {
        let read = self.inner.read_range_md5(name, range.clone(), etag);
        let CheckedRange { data, md5 } = self.call(Op::Read, name, read).await?;
        let data = self.damaged(name, &Some(range), data)?;
        Ok(CheckedRange { data, md5 })
    }

    async fn read_stream(&self, name: &str, range: Range<u64>, etag: &str) -> Result<ByteStream> {
        let read = self.inner.read_stream(name, range.clone(), etag);
        let body = self.call(Op::Read, name, read).await?;
        let damager = self.damager(name, &Some(range));
        Ok(body
            .scan(damager, |damager, piece| {
                let out = (!damager.finished).then(|| match piece {
                    Ok(piece) => damager.apply(piece),
                    Err(e) => {
                        damager.finished = true;
                        vec![Err(e)]
                    }
                });
                futures::future::ready(out)
            })
            .flat_map(stream::iter)
            .boxed())
    }

    async fn put_if(&self, write: &BlobWrite, data: Bytes) -> Result<BlobMeta> {
        let put = self.inner.put_if(write, data);
        self.call(Op::Put, &write.name, put).await
    }

    async fn put_block(&self, name: &str, id: BlockId, data: Bytes) -> Result<StagedBlock> {
        let put = self.inner.put_block(name, id, data);
        self.call(Op::PutBlock, name, put).await
    }

    async fn put_block_list(&self, write: &BlobWrite, blocks: &[StagedBlock]) -> Result<BlobMeta> {
        let commit = self.inner.put_block_list(write, blocks);
        self.call(Op::Commit, &write.name, commit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use crate::storage::{Metadata, WriteCondition};
    use futures::TryStreamExt;
    use std::time::Instant;

    const DATA: &[u8] = b"0123456789abcdefghij";

    async fn store_with_blob() -> (FaultyStore, BlobMeta) {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        let meta = store
            .put("b", Bytes::from_static(DATA), &Metadata::new())
            .await
            .unwrap();
        (store, meta)
    }

    #[tokio::test]
    async fn the_next_n_calls_of_one_operation_fail_then_calls_pass() {
        let (store, _) = store_with_blob().await;
        store.fail(Op::Head, 2, Fault::NotFound);
        store.fail(Op::Head, 1, Fault::Auth);
        for _ in 0..2 {
            let err = store.head("b").await.unwrap_err();
            assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
        }
        let err = store.head("b").await.unwrap_err();
        assert!(
            matches!(err, StorageError::Auth { status: 403, .. }),
            "{err:?}"
        );
        store.head("b").await.unwrap();
        store.fail(Op::Head, ALWAYS, Fault::Transient);
        store.head("b").await.unwrap_err();
        store.heal(Op::Head);
        store.head("b").await.unwrap();
        // Other operations were never touched.
        assert_eq!(store.list_dir("").await.unwrap().files.len(), 1);
        assert_eq!((store.calls(Op::Head), store.calls(Op::List)), (6, 1));
        assert_eq!(store.calls(Op::Read), 0);
    }

    #[tokio::test]
    async fn canned_faults_are_the_errors_they_name() {
        let (store, meta) = store_with_blob().await;
        for fault in [Fault::Transient, Fault::Unreachable, Fault::Changed] {
            store.fail(Op::Read, 1, fault);
        }
        let err = store.read("b", None, &meta.etag).await.unwrap_err();
        assert!(matches!(err, StorageError::Service { status: 503, .. }) && err.is_transient());
        let err = store.read("b", None, &meta.etag).await.unwrap_err();
        assert!(matches!(err, StorageError::Unreachable { .. }) && err.is_transient());
        let err = store.read("b", None, &meta.etag).await.unwrap_err();
        assert!(matches!(err, StorageError::Changed { .. }) && !err.is_transient());
        store.fail(Op::Put, ALWAYS, Fault::AlreadyExists);
        for _ in 0..3 {
            let err = store
                .put("n", Bytes::new(), &Metadata::new())
                .await
                .unwrap_err();
            assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
        }
        assert!(matches!(
            store.head("n").await,
            Err(StorageError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_lost_answer_fails_a_write_that_took_effect() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        store.fail(Op::Commit, 1, Fault::LostAnswer);
        let block = store
            .put_block("w", BlockId::from_index(0), Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let err = store
            .put_block_list(
                &BlobWrite::new("w", &Metadata::new(), WriteCondition::IfNoneMatch),
                &[block],
            )
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(store.head("w").await.unwrap().size, 3);
        assert_eq!((store.calls(Op::PutBlock), store.calls(Op::Commit)), (1, 1));
    }

    #[tokio::test]
    async fn listings_and_heads_report_the_content_md5_they_are_told() {
        let (store, meta) = store_with_blob().await;
        assert_eq!(meta.content_md5, Some(crate::digest::md5(DATA)));
        let wrong = crate::digest::md5(b"other");
        for reported in [None, Some(wrong)] {
            store.report_md5(reported);
            assert_eq!(store.head("b").await.unwrap().content_md5, reported);
            let listed = store.list_dir("").await.unwrap().files;
            assert_eq!(listed[0].content_md5, reported);
            assert_eq!(listed[0].etag, meta.etag, "nothing else changes");
        }
    }

    #[tokio::test]
    async fn delays_hold_back_only_their_operation() {
        let (store, meta) = store_with_blob().await;
        store.delay(Op::Read, Duration::from_millis(200));
        let start = Instant::now();
        store.head("b").await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(150));
        store.read("b", None, &meta.etag).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_flipped_byte_is_at_its_blob_offset_for_the_configured_reads() {
        let (store, meta) = store_with_blob().await;
        store.damage_reads(2, Damage::FlipByte(12));
        let got = store.read("b", Some(10..15), &meta.etag).await.unwrap();
        let mut want = DATA[10..15].to_vec();
        want[2] ^= 0xFF;
        assert_eq!(&got[..], &want[..]);
        // The second damaged read doesn't cover offset 12: unchanged, but it used the rule.
        let got = store.read("b", Some(0..5), &meta.etag).await.unwrap();
        assert_eq!(&got[..], &DATA[..5]);
        let got = store.read("b", None, &meta.etag).await.unwrap();
        assert_eq!(&got[..], DATA);
    }

    #[tokio::test]
    async fn damaged_range_md5_reads_keep_the_md5_the_store_reported() {
        let (store, meta) = store_with_blob().await;
        let clean = store.read_range_md5("b", 10..15, &meta.etag).await.unwrap();
        assert_eq!(&clean.data[..], &DATA[10..15]);
        assert_eq!(clean.md5, Some(crate::digest::md5(&DATA[10..15])));
        store.damage_reads(1, Damage::FlipByte(12));
        let damaged = store.read_range_md5("b", 10..15, &meta.etag).await.unwrap();
        assert_ne!(damaged.data, clean.data, "the bytes are damaged");
        assert_eq!(damaged.md5, clean.md5, "the reported MD5 is not");
        assert_ne!(Some(crate::digest::md5(&damaged.data)), damaged.md5);
        store.fail(Op::Read, 1, Fault::Changed);
        let err = store
            .read_range_md5("b", 0..5, &meta.etag)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
        assert_eq!(store.calls(Op::Read), 3);
        assert_eq!(store.bytes_read(), 10);
    }

    #[tokio::test]
    async fn truncation_and_cuts_serve_exactly_k_bytes_and_count_them() {
        let (store, meta) = store_with_blob().await;
        store.damage_reads(1, Damage::Truncate(7));
        store.damage_reads(1, Damage::CutAfter(4));
        store.damage_reads(1, Damage::CutAfter(4));
        let got = store.read("b", None, &meta.etag).await.unwrap();
        assert_eq!(&got[..], &DATA[..7]);
        let err = store.read("b", Some(2..12), &meta.etag).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let mut stream = store.read_stream("b", 2..12, &meta.etag).await.unwrap();
        assert_eq!(&stream.try_next().await.unwrap().unwrap()[..], &DATA[2..6]);
        let err = stream.try_next().await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(stream.next().await.is_none());
        // A cut after the whole body is no cut.
        store.damage_reads(1, Damage::CutAfter(100));
        let whole: Vec<Bytes> = store
            .read_stream("b", 0..DATA.len() as u64, &meta.etag)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(whole.concat(), DATA);
        assert_eq!(store.bytes_read(), 7 + 4 + 4 + DATA.len() as u64);
        assert_eq!(store.calls(Op::Read), 4);
    }

    #[test]
    fn damage_spans_the_pieces_of_a_stream() {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let damager = |damage| Damager {
            damage: Some(damage),
            position: 100,
            served: 0,
            finished: false,
            name: "b".into(),
            bytes_read: Arc::clone(&bytes_read),
        };
        let pieces = [&b"abcd"[..], b"efgh", b"ijkl"];
        let run = |mut d: Damager| {
            let mut out = Vec::new();
            for p in pieces {
                if d.finished {
                    break;
                }
                out.extend(d.apply(Bytes::from_static(p)));
            }
            out
        };
        let flipped = run(damager(Damage::FlipByte(105)));
        let mut want = b"efgh".to_vec();
        want[1] ^= 0xFF;
        assert_eq!(flipped[1].as_ref().unwrap()[..], want[..]);
        assert_eq!(flipped.len(), 3);
        let cut = run(damager(Damage::CutAfter(8)));
        assert_eq!(cut.len(), 3, "two whole pieces, then the error");
        assert!(cut[2].as_ref().is_err_and(StorageError::is_transient));
        let cut = run(damager(Damage::CutAfter(6)));
        assert_eq!(cut[1].as_ref().unwrap()[..], b"ef"[..]);
        assert!(cut[2].is_err());
        let short = run(damager(Damage::Truncate(6)));
        assert_eq!(short.len(), 2);
        assert_eq!(bytes_read.load(Ordering::SeqCst), 12 + 8 + 6 + 6);
    }
}
