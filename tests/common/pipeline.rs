//! The materialisation pipeline over the in-memory store, for fast tests with no Azurite
//! and no FUSE: a `MemoryStore` behind a `FaultyStore`, the native fetcher with small
//! ranges (many per file), a real `Cache` in a temporary directory, and the metrics it
//! counts into. [`Rig::counts`] reads every counter at once, so a test states exactly what
//! moved and, by the defaults, that nothing else did.
//!
//! ```ignore
//! let rig = Rig::builder().parallelism(1).build();
//! let meta = rig.put("f", &data).await;
//! rig.pipeline.ensure(&rig.key(&meta), &meta).await.unwrap();
//! assert_eq!(rig.counts(), Counts { reads: 3, bytes_read: 3 * CHUNK, native_fetches: 1, ..Counts::default() });
//! ```

use adlsfs::cache::layout::EntryKey;
use adlsfs::cache::{Bounds, Cache, MinFree};
use adlsfs::error::ErrorKind;
use adlsfs::fetch::native::{NativeConfig, NativeFetcher};
use adlsfs::materialise::verify::VerifyPolicy;
use adlsfs::materialise::Materialiser;
use adlsfs::metrics::Metrics;
use adlsfs::storage::faulty::{FaultyStore, Op};
use adlsfs::storage::memory::MemoryStore;
use adlsfs::storage::{
    BlobMeta, BlobStore, BlobWrite, BlockId, Metadata, RetryPolicy, WriteCondition,
};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Largest range of one GET: a file of a few hundred KiB is many ranges.
pub const CHUNK: u64 = 64 * 1024;

/// What varies between rigs; [`Rig::builder`] starts with four connections, quick
/// retries for 5 s, no bound on the cache and the lenient verification policy.
pub struct Builder {
    parallelism: usize,
    retry: RetryPolicy,
    bounds: Bounds,
    policy: VerifyPolicy,
}

impl Builder {
    /// GETs in flight; 1 makes the order of ranges, and so the count of GETs before a
    /// refusal, exact.
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n;
        self
    }

    /// How long a range keeps being retried after transient faults.
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.retry.budget = budget;
        self
    }

    /// Bounds the cache's entries to `max` bytes (and keeps no free space).
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.bounds = Bounds {
            max_bytes: Some(max),
            min_free: MinFree::Bytes(0),
        };
        self
    }

    /// `--require-digest`.
    pub fn require_digest(mut self) -> Self {
        self.policy.require_digest = true;
        self
    }

    pub fn build(self) -> Rig {
        let memory: Arc<dyn BlobStore> = Arc::new(MemoryStore::new());
        let store = Arc::new(FaultyStore::new(memory));
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let cache = Cache::open_bounded(dir.path(), self.bounds)
            .unwrap()
            .with_metrics(Arc::clone(&metrics));
        let cache = Arc::new(cache);
        let fetcher = NativeFetcher::new(
            store.clone(),
            NativeConfig {
                chunk_size: CHUNK,
                parallelism: self.parallelism,
                check_ranges: false,
                retry: self.retry,
            },
        );
        let pipeline = Materialiser::new(Arc::clone(&cache), Arc::new(fetcher), self.policy)
            .with_metrics(Arc::clone(&metrics));
        Rig {
            store,
            cache,
            pipeline: Arc::new(pipeline),
            metrics,
            dir,
        }
    }
}

/// One pipeline over a faulty in-memory store, with its cache and metrics.
pub struct Rig {
    pub store: Arc<FaultyStore>,
    pub cache: Arc<Cache>,
    pub pipeline: Arc<Materialiser>,
    pub metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
}

impl Rig {
    pub fn builder() -> Builder {
        Builder {
            parallelism: 4,
            retry: RetryPolicy {
                budget: Duration::from_secs(5),
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            bounds: Bounds::default(),
            policy: VerifyPolicy::default(),
        }
    }

    /// Put Blob of `data` with its xxh3 digest in metadata (and Content-MD5).
    pub async fn put(&self, name: &str, data: &[u8]) -> BlobMeta {
        self.put_claiming(name, data, data).await
    }

    /// Put Blob of `data` whose metadata records the digest of `claimed` instead: a blob
    /// whose recorded digest is wrong.
    pub async fn put_claiming(&self, name: &str, data: &[u8], claimed: &[u8]) -> BlobMeta {
        let metadata = super::with_digest(claimed);
        self.store
            .put(name, Bytes::copy_from_slice(data), &metadata)
            .await
            .unwrap()
    }

    /// A blob with no digest of any kind: one committed block, so no Content-MD5 either.
    pub async fn put_bare(&self, name: &str, data: &[u8]) -> BlobMeta {
        let block = self
            .store
            .put_block(name, BlockId::from_index(0), Bytes::copy_from_slice(data))
            .await
            .unwrap();
        let meta = self
            .store
            .put_block_list(
                &BlobWrite::new(name, &Metadata::new(), WriteCondition::Overwrite),
                &[block],
            )
            .await
            .unwrap();
        assert_eq!((meta.content_md5, meta.xxh3().unwrap()), (None, None));
        meta
    }

    /// The entry of `meta`'s version.
    pub fn key(&self, meta: &BlobMeta) -> EntryKey {
        EntryKey {
            account: "acct".into(),
            container: "box".into(),
            blob: meta.name.clone(),
            etag: meta.etag.clone(),
        }
    }

    /// Files in the cache's `tmp/` (downloads in progress or left behind).
    pub fn temporaries(&self) -> Vec<PathBuf> {
        files_under(&self.cache.layout().tmp_dir())
    }

    /// The complete entries, under `v1/`.
    pub fn entries(&self) -> Vec<PathBuf> {
        files_under(&self.cache.layout().entries_dir())
    }

    pub fn cache_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A failed materialisation left nothing: no temporary, no entry.
    pub fn assert_left_nothing(&self) {
        assert_eq!(self.temporaries(), Vec::<PathBuf>::new(), "tmp/");
        assert_eq!(self.entries(), Vec::<PathBuf>::new(), "v1/");
    }

    /// Every counter the store and the metrics keep, read now.
    pub fn counts(&self) -> Counts {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::SeqCst);
        let m = &self.metrics;
        Counts {
            reads: self.store.calls(Op::Read),
            bytes_read: self.store.bytes_read(),
            hits: get(&m.cache_hits),
            misses: get(&m.cache_misses),
            native_fetches: get(&m.native.fetches),
            native_bytes: get(&m.native.bytes),
            azcopy_fetches: get(&m.azcopy.fetches),
            failures: ErrorKind::ALL
                .iter()
                .zip(&m.fetch_failures)
                .map(|(kind, n)| (*kind, get(n)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            verification_failures: get(&m.verification_failures),
            evictions: get(&m.evictions),
            in_flight: get(&m.in_flight),
        }
    }
}

/// Read and fetch counters at one moment; compare whole, so nothing moves unnoticed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// GETs the store received (ranged or whole, failed ones included).
    pub reads: u64,
    /// Bytes the store handed out.
    pub bytes_read: u64,
    pub hits: u64,
    pub misses: u64,
    pub native_fetches: u64,
    /// Bytes of completed native downloads.
    pub native_bytes: u64,
    pub azcopy_fetches: u64,
    /// Failed materialisations by kind, only the kinds that occurred, in
    /// [`ErrorKind::ALL`] order.
    pub failures: Vec<(ErrorKind, u64)>,
    pub verification_failures: u64,
    pub evictions: u64,
    pub in_flight: u64,
}

/// Every non-directory under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = super::walk(dir)
        .into_keys()
        .map(|rel| dir.join(rel))
        .collect();
    out.sort();
    out
}
