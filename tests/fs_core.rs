//! Fast tests of the filesystem core (`adlsfs::fs::AdlsFs`) against the in-memory store:
//! no FUSE, no Azurite. They check the contracts of DESIGN.md that the core alone decides:
//! attributes from listings, verified materialisation, single-flight, odd names, xattrs,
//! read-only errors and one inode per blob version.

mod common;

use adlsfs::cache::layout::EntryKey;
use adlsfs::cache::Cache;
use adlsfs::digest::{self, XXH3_METADATA_KEY};
use adlsfs::fetch::native::{NativeConfig, NativeFetcher};
use adlsfs::fs::{AdlsFs, Attr, FsConfig, FsError, Ino, Kind, ROOT_INO};
use adlsfs::location::Location;
use adlsfs::materialise::verify::VerifyPolicy;
use adlsfs::materialise::Materialiser;
use adlsfs::storage::faulty::{Damage, FaultyStore, Op};
use adlsfs::storage::memory::MemoryStore;
use adlsfs::storage::{BlobMeta, BlobStore, Metadata};
use bytes::Bytes;
use common::pattern;
use common::pipeline::files_under;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const CHUNK: u64 = 64 * 1024;
const MIB: usize = 1 << 20;

fn config() -> FsConfig {
    FsConfig {
        metadata_ttl: Duration::from_secs(60),
        uid: 1000,
        gid: 1000,
        file_mode: 0o644,
        dir_mode: 0o755,
    }
}

/// A filesystem core over `store`, with its own cache directory.
struct Mount {
    fs: Arc<AdlsFs>,
    cache: Arc<Cache>,
    cache_dir: TempDir,
    location: Location,
}

impl Mount {
    fn new(store: Arc<dyn BlobStore>, location: &str) -> Self {
        Self::with(store, location, false, config())
    }

    /// The container, with listings trusted for `ttl`.
    fn with_ttl(store: Arc<dyn BlobStore>, ttl: Duration) -> Self {
        let config = FsConfig {
            metadata_ttl: ttl,
            ..config()
        };
        Self::with(store, "adls://acct/box", false, config)
    }

    fn with(
        store: Arc<dyn BlobStore>,
        location: &str,
        require_digest: bool,
        config: FsConfig,
    ) -> Self {
        let cache_dir = tempfile::tempdir().unwrap();
        Self::on_cache(store, location, require_digest, config, cache_dir)
    }

    /// Opens wait for the verified file (`--verify-before-read`): the cache and inode
    /// behaviour these tests look at shows without a download still running.
    fn on_cache(
        store: Arc<dyn BlobStore>,
        location: &str,
        require_digest: bool,
        config: FsConfig,
        cache_dir: TempDir,
    ) -> Self {
        let policy = VerifyPolicy {
            require_digest,
            before_read: true,
        };
        Self::build(store, location, policy, config, cache_dir)
    }

    /// The default: reads are served while the file arrives, fetched by `native`.
    fn streaming(store: Arc<dyn BlobStore>, native: NativeConfig) -> Self {
        let cache_dir = tempfile::tempdir().unwrap();
        let policy = VerifyPolicy::default();
        Self::build_with(
            store,
            "adls://acct/box",
            policy,
            config(),
            cache_dir,
            native,
        )
    }

    fn build(
        store: Arc<dyn BlobStore>,
        location: &str,
        policy: VerifyPolicy,
        config: FsConfig,
        cache_dir: TempDir,
    ) -> Self {
        let native = NativeConfig {
            chunk_size: CHUNK,
            parallelism: 4,
            ..NativeConfig::default()
        };
        Self::build_with(store, location, policy, config, cache_dir, native)
    }

    fn build_with(
        store: Arc<dyn BlobStore>,
        location: &str,
        policy: VerifyPolicy,
        config: FsConfig,
        cache_dir: TempDir,
        native: NativeConfig,
    ) -> Self {
        let cache = Arc::new(Cache::open(cache_dir.path()).unwrap());
        let fetcher = Arc::new(NativeFetcher::new(Arc::clone(&store), native));
        let location: Location = location.parse().unwrap();
        let materialiser = Arc::new(Materialiser::new(Arc::clone(&cache), fetcher, policy));
        let fs = Arc::new(AdlsFs::new(location.clone(), store, materialiser, config));
        Self {
            fs,
            cache,
            cache_dir,
            location,
        }
    }

    fn v1_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir.path().join("v1"))
    }

    fn tmp_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir.path().join("tmp"))
    }

    fn entry_path(&self, meta: &BlobMeta) -> PathBuf {
        self.cache.layout().entry_path(&EntryKey {
            account: self.location.account.clone(),
            container: self.location.container.clone(),
            blob: meta.name.clone(),
            etag: meta.etag.clone(),
        })
    }
}

/// A store whose blobs have no Content-MD5, as a block upload leaves them.
fn without_md5() -> Arc<FaultyStore> {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    store.report_md5(None);
    store
}

/// Uploads `data`, with the xxh3 metadata when `with_digest`.
async fn put(store: &dyn BlobStore, name: &str, data: &[u8], with_digest: bool) -> BlobMeta {
    let metadata = if with_digest {
        common::with_digest(data)
    } else {
        Metadata::new()
    };
    store
        .put(name, Bytes::copy_from_slice(data), &metadata)
        .await
        .unwrap()
}

/// Walks `path` ("a/b/c") from the root with lookups.
async fn resolve(fs: &AdlsFs, path: &str) -> Result<Attr, FsError> {
    let mut attr = fs.getattr(ROOT_INO)?;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        attr = fs.lookup(attr.ino, segment).await?;
    }
    Ok(attr)
}

/// The names in a directory, through opendir/readdir/releasedir.
async fn names(fs: &AdlsFs, ino: Ino) -> Vec<String> {
    let fh = fs.opendir(ino).unwrap();
    let entries = fs.readdir(ino, fh, 0).await.unwrap();
    fs.releasedir(fh);
    entries.iter().map(|e| e.name.clone()).collect()
}

fn errno<T: std::fmt::Debug>(result: Result<T, FsError>) -> i32 {
    result.expect_err("expected an error").errno()
}

/// Reads a whole open file through `fs.read`, in pieces that straddle chunk boundaries.
async fn read_all(fs: &AdlsFs, fh: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let piece = fs.read(fh, out.len() as u64, 100_000).await.unwrap();
        if piece.is_empty() {
            return out;
        }
        out.extend_from_slice(&piece);
    }
}

// 1 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tree_sizes_and_mtimes_come_from_listing_without_any_download() {
    let store = Arc::new(MemoryStore::new());
    let top = put(store.as_ref(), "top.txt", &pattern(1000, 1), true).await;
    let one = put(store.as_ref(), "a/one", &pattern(513, 2), true).await;
    let two = put(store.as_ref(), "a/b/two", b"", true).await;
    let three = put(store.as_ref(), "a/b/c/three", &pattern(512, 3), false).await;
    put(store.as_ref(), "a/d/four", &pattern(10, 4), true).await;
    put(store.as_ref(), "other/x", b"x", true).await;
    let custom = FsConfig {
        uid: 1234,
        gid: 5678,
        file_mode: 0o640,
        dir_mode: 0o750,
        ..config()
    };
    let m = Mount::with(store.clone(), "adls://acct/box", false, custom);
    let fs = &m.fs;

    assert_eq!(names(fs, ROOT_INO).await, ["a", "other", "top.txt"]);
    assert_eq!(
        names(fs, resolve(fs, "a").await.unwrap().ino).await,
        ["b", "d", "one"]
    );
    assert_eq!(
        names(fs, resolve(fs, "a/b").await.unwrap().ino).await,
        ["c", "two"]
    );
    assert_eq!(
        names(fs, resolve(fs, "a/b/c").await.unwrap().ino).await,
        ["three"]
    );

    for (path, meta, blocks) in [
        ("top.txt", &top, 2),
        ("a/one", &one, 2),
        ("a/b/two", &two, 0),
        ("a/b/c/three", &three, 1),
    ] {
        let attr = resolve(fs, path).await.unwrap();
        assert_eq!(attr.kind, Kind::File, "{path}");
        assert_eq!(attr.size, meta.size, "{path}");
        assert_eq!(attr.blocks, blocks, "{path}: st_blocks = ceil(size / 512)");
        assert_eq!(attr.mtime, meta.last_modified, "{path}");
        assert_eq!(attr.nlink, 1, "{path}");
        assert_eq!(
            (attr.uid, attr.gid, attr.perm),
            (1234, 5678, 0o640),
            "{path}"
        );
        assert_eq!(
            fs.getattr(attr.ino).unwrap(),
            attr,
            "{path}: getattr = lookup"
        );
    }

    // Directory attributes, once each directory has been listed.
    for (path, subdirs) in [("", 2), ("a", 2), ("a/b", 1), ("a/b/c", 0), ("other", 0)] {
        let ino = resolve(fs, path).await.unwrap().ino;
        names(fs, ino).await;
        let attr = fs.getattr(ino).unwrap();
        assert_eq!(attr.kind, Kind::Dir, "{path:?}");
        assert_eq!(
            attr.nlink,
            2 + subdirs,
            "{path:?}: nlink = 2 + subdirectories"
        );
        assert_eq!(
            (attr.uid, attr.gid, attr.perm),
            (1234, 5678, 0o750),
            "{path:?}"
        );
    }

    // readdir entries carry the same attributes as lookup.
    let a = resolve(fs, "a").await.unwrap().ino;
    let fh = fs.opendir(a).unwrap();
    let entries = fs.readdir(a, fh, 0).await.unwrap();
    fs.releasedir(fh);
    let one_entry = entries.iter().find(|e| e.name == "one").unwrap();
    assert_eq!(one_entry.attr, resolve(fs, "a/one").await.unwrap());

    assert_eq!(store.read_count(), 0, "listing and stat must not download");
    assert!(m.v1_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_location_shows_only_what_is_under_the_prefix() {
    let store = Arc::new(MemoryStore::new());
    let g = put(store.as_ref(), "pre/g", b"ggg", true).await;
    put(store.as_ref(), "pre/in/f", b"ffff", true).await;
    put(store.as_ref(), "prefix-sibling/h", b"h", true).await;
    put(store.as_ref(), "pre-not/z", b"z", true).await;
    put(store.as_ref(), "pref", b"p", true).await;
    put(store.as_ref(), "out/y", b"y", true).await;
    let m = Mount::new(store.clone(), "adls://acct/box/pre");
    let fs = &m.fs;

    assert_eq!(names(fs, ROOT_INO).await, ["g", "in"]);
    assert_eq!(names(fs, resolve(fs, "in").await.unwrap().ino).await, ["f"]);
    let attr = resolve(fs, "g").await.unwrap();
    assert_eq!((attr.size, attr.mtime), (3, g.last_modified));
    assert_eq!(resolve(fs, "in/f").await.unwrap().size, 4);
    for outside in ["pre", "h", "z", "y", "out", "pref", "prefix-sibling"] {
        assert_eq!(
            errno(fs.lookup(ROOT_INO, outside).await),
            libc::ENOENT,
            "{outside}"
        );
    }
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(store.read_count(), 0);
}

// 2 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_materialises_verified_bytes_once_into_the_cache() {
    let store = Arc::new(MemoryStore::new());
    let data = pattern(MIB + 123, 7);
    let big = put(store.as_ref(), "dir/big.bin", &data, true).await;
    let empty = put(store.as_ref(), "dir/empty", b"", true).await;
    let m = Mount::new(store.clone(), "adls://acct/box");
    let fs = &m.fs;
    let chunks = (data.len() as u64).div_ceil(CHUNK);

    let ino = resolve(fs, "dir/big.bin").await.unwrap().ino;
    let open = fs.open(ino, false).await.unwrap();
    assert_eq!(open.ino, ino);
    assert_eq!(store.read_count(), chunks, "one ranged GET per chunk");
    assert!(
        read_all(fs, open.fh).await == data,
        "bytes differ from the blob"
    );
    let across = MIB as u64 - 500; // straddles a chunk boundary
    assert_eq!(
        fs.read(open.fh, across, 600).await.unwrap(),
        data[MIB - 500..MIB + 100]
    );
    assert_eq!(
        fs.read(open.fh, data.len() as u64 - 3, 100).await.unwrap(),
        data[data.len() - 3..]
    );
    assert!(fs
        .read(open.fh, data.len() as u64 + 10, 100)
        .await
        .unwrap()
        .is_empty());

    // The second open (with the first still open, and after it is released) is a cache hit.
    let again = fs.open(ino, false).await.unwrap();
    assert_ne!(again.fh, open.fh);
    fs.release(open.fh);
    assert_eq!(errno(fs.read(open.fh, 0, 10).await), libc::EBADF);
    let third = fs.open(ino, false).await.unwrap();
    assert_eq!(
        store.read_count(),
        chunks,
        "a cached file is not downloaded again"
    );
    assert!(read_all(fs, third.fh).await == data);
    fs.release(again.fh);
    fs.release(third.fh);

    // The empty blob: one whole-blob read, an empty cache file.
    let empty_ino = resolve(fs, "dir/empty").await.unwrap().ino;
    let e = fs.open(empty_ino, false).await.unwrap();
    assert_eq!(store.read_count(), chunks + 1);
    assert!(fs.read(e.fh, 0, 4096).await.unwrap().is_empty());
    fs.release(e.fh);
    fs.open(empty_ino, false).await.unwrap();
    assert_eq!(store.read_count(), chunks + 1);

    let big_path = m.entry_path(&big);
    let empty_path = m.entry_path(&empty);
    assert!(big_path.starts_with(m.cache_dir.path().join("v1/acct/box/dir")));
    assert_eq!(m.v1_files(), {
        let mut v = vec![big_path.clone(), empty_path.clone()];
        v.sort();
        v
    });
    assert!(std::fs::read(&big_path).unwrap() == data);
    assert_eq!(std::fs::metadata(&empty_path).unwrap().len(), 0);
    assert_eq!(m.tmp_files(), Vec::<PathBuf>::new(), "tmp/ must be empty");

    // Another mount (another process on the node) sharing the cache directory reuses it.
    let Mount { cache_dir, .. } = m;
    let other = Mount::on_cache(store.clone(), "adls://acct/box", false, config(), cache_dir);
    let ino = resolve(&other.fs, "dir/big.bin").await.unwrap().ino;
    let o = other.fs.open(ino, false).await.unwrap();
    assert!(read_all(&other.fs, o.fh).await == data);
    assert_eq!(
        store.read_count(),
        chunks + 1,
        "a shared cache entry is reused"
    );
}

// 3 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_cold_file_download_it_once() {
    let store = Arc::new(MemoryStore::new());
    let data = Arc::new(pattern(MIB + 123, 11));
    put(store.as_ref(), "hot.bin", &data, true).await;
    let m = Mount::new(store.clone(), "adls://acct/box");
    let ino = resolve(&m.fs, "hot.bin").await.unwrap().ino;
    let one_cold_open = (data.len() as u64).div_ceil(CHUNK);

    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (fs, barrier, data) = (Arc::clone(&m.fs), Arc::clone(&barrier), Arc::clone(&data));
            tokio::spawn(async move {
                barrier.wait().await;
                let open = fs.open(ino, false).await.unwrap();
                assert!(read_all(&fs, open.fh).await == *data, "bytes differ");
                open.fh
            })
        })
        .collect();
    let mut handles = Vec::new();
    for task in tasks {
        handles.push(task.await.unwrap());
    }
    handles.sort();
    handles.dedup();
    assert_eq!(handles.len(), 16, "each open gets its own handle");
    assert_eq!(store.read_count(), one_cold_open, "16 opens, one download");
    assert_eq!(m.v1_files().len(), 1);
    assert!(m.tmp_files().is_empty());
}

// 4 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_digest_fails_with_eio_leaves_nothing_and_is_retried() {
    let store = Arc::new(MemoryStore::new());
    let data = pattern(200_000, 5);
    let lying = common::with_digest(b"something else");
    store
        .put("bad.bin", Bytes::from(data.clone()), &lying)
        .await
        .unwrap();
    let m = Mount::new(store.clone(), "adls://acct/box");
    let ino = resolve(&m.fs, "bad.bin").await.unwrap().ino;

    assert_eq!(errno(m.fs.open(ino, false).await), libc::EIO);
    let after_first = store.read_count();
    assert!(after_first > 0);
    assert_eq!(
        m.v1_files(),
        Vec::<PathBuf>::new(),
        "nothing unverified is cached"
    );
    assert_eq!(
        m.tmp_files(),
        Vec::<PathBuf>::new(),
        "the temporary is removed"
    );

    assert_eq!(errno(m.fs.open(ino, false).await), libc::EIO);
    assert!(
        store.read_count() > after_first,
        "a failed download is tried again"
    );
    assert!(m.v1_files().is_empty());
    assert!(m.tmp_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_digest_metadata_fails_with_eio() {
    let store = Arc::new(MemoryStore::new());
    let metadata: Metadata = [(XXH3_METADATA_KEY.to_string(), "not a digest".to_string())].into();
    store
        .put("garbled", Bytes::from_static(b"hello"), &metadata)
        .await
        .unwrap();
    let m = Mount::new(store.clone(), "adls://acct/box");
    let ino = resolve(&m.fs, "garbled").await.unwrap().ino;
    assert_eq!(errno(m.fs.open(ino, false).await), libc::EIO);
    assert_eq!(
        errno(m.fs.getxattr(ino, "user.hash.xxh3_128").await),
        libc::EIO
    );
    assert!(m.v1_files().is_empty());
    assert!(m.tmp_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_digest_accepts_content_md5_without_xxh3_metadata() {
    // MemoryStore records Content-MD5 on every put, so such a blob is verifiable.
    let store = Arc::new(MemoryStore::new());
    let data = pattern(150_000, 9);
    put(store.as_ref(), "md5only", &data, false).await;
    let m = Mount::with(store.clone(), "adls://acct/box", true, config());
    let ino = resolve(&m.fs, "md5only").await.unwrap().ino;
    let open = m.fs.open(ino, false).await.unwrap();
    assert!(read_all(&m.fs, open.fh).await == data);
    assert_eq!(m.v1_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_digest_refuses_a_blob_with_no_digest_at_all() {
    let store = without_md5();
    let data = pattern(1000, 3);
    put(store.as_ref(), "bare", &data, false).await;
    put(store.as_ref(), "hashed", &data, true).await;

    let strict = Mount::with(store.clone(), "adls://acct/box", true, config());
    let bare = resolve(&strict.fs, "bare").await.unwrap().ino;
    assert_eq!(errno(strict.fs.open(bare, false).await), libc::EIO);
    assert!(strict.v1_files().is_empty());
    assert!(strict.tmp_files().is_empty());
    let hashed = resolve(&strict.fs, "hashed").await.unwrap().ino;
    strict.fs.open(hashed, false).await.unwrap();

    // Without --require-digest the same blob is served after a length-checked download.
    let lenient = Mount::new(store.clone(), "adls://acct/box");
    let bare = resolve(&lenient.fs, "bare").await.unwrap().ino;
    let open = lenient.fs.open(bare, false).await.unwrap();
    assert!(read_all(&lenient.fs, open.fh).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_content_md5_fails_with_eio_when_there_is_no_xxh3() {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    store.report_md5(Some(digest::md5(b"other bytes")));
    let data = pattern(70_000, 4);
    put(store.as_ref(), "md5bad", &data, false).await;
    put(store.as_ref(), "xxh3good", &data, true).await;
    let m = Mount::new(store.clone(), "adls://acct/box");
    let bad = resolve(&m.fs, "md5bad").await.unwrap().ino;
    assert_eq!(errno(m.fs.open(bad, false).await), libc::EIO);
    assert!(m.v1_files().is_empty());
    assert!(m.tmp_files().is_empty());
    // With xxh3 metadata, the (slow) MD5 is not consulted.
    let good = resolve(&m.fs, "xxh3good").await.unwrap().ino;
    let open = m.fs.open(good, false).await.unwrap();
    assert!(read_all(&m.fs, open.fh).await == data);
}

// 5 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_names_are_hidden_and_never_break_a_listing() {
    let store = Arc::new(MemoryStore::new());
    let long256 = "x".repeat(256);
    let long255 = "y".repeat(255);
    for name in [
        "d/ok".to_string(),
        "d//x".to_string(),
        "d/../escape".to_string(),
        "d/./dot".to_string(),
        "d/.".to_string(),
        "d/".to_string(),
        format!("d/{long256}"),
        format!("d/{long256}/under"),
        format!("long/{long255}"),
        "c/a".to_string(),
        "c/a/b".to_string(),
    ] {
        put(store.as_ref(), &name, name.as_bytes(), true).await;
    }
    let m = Mount::new(store.clone(), "adls://acct/box");
    let fs = &m.fs;

    assert_eq!(names(fs, ROOT_INO).await, ["c", "d", "long"]);
    let d = resolve(fs, "d").await.unwrap().ino;
    assert_eq!(names(fs, d).await, ["ok"]);
    assert_eq!(
        fs.getattr(d).unwrap().nlink,
        2,
        "hidden prefixes are not subdirectories"
    );
    assert_eq!(resolve(fs, "d/ok").await.unwrap().size, 4);
    for hidden in [
        "",
        ".",
        "..",
        "x",
        "escape",
        "dot",
        "under",
        long256.as_str(),
    ] {
        assert_eq!(
            errno(fs.lookup(d, hidden).await),
            libc::ENOENT,
            "{hidden:?}"
        );
    }
    assert_eq!(errno(fs.lookup(ROOT_INO, "escape").await), libc::ENOENT);

    // A 255-byte name is legal and shown.
    let long = resolve(fs, "long").await.unwrap().ino;
    assert_eq!(names(fs, long).await, vec![long255.clone()]);
    assert_eq!(fs.lookup(long, &long255).await.unwrap().kind, Kind::File);

    // "c/a" is both a blob and a prefix: the directory wins.
    let c = resolve(fs, "c").await.unwrap().ino;
    let fh = fs.opendir(c).unwrap();
    let entries = fs.readdir(c, fh, 0).await.unwrap();
    fs.releasedir(fh);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].name.as_str(), entries[0].attr.kind),
        ("a", Kind::Dir)
    );
    let a = fs.lookup(c, "a").await.unwrap();
    assert_eq!(a.kind, Kind::Dir);
    assert_eq!(names(fs, a.ino).await, ["b"]);
    assert_eq!(resolve(fs, "c/a/b").await.unwrap().kind, Kind::File);

    // Listing twice (a refresh) gives the same result.
    assert_eq!(names(fs, d).await, ["ok"]);
    assert_eq!(store.read_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adls_gen2_directory_markers_are_directories_with_or_without_children() {
    let store = Arc::new(MemoryStore::new());
    let folder = Metadata::from([("hdi_isfolder".to_string(), "true".to_string())]);
    for marker in ["lake/empty", "lake/full", "lake/nested/deep"] {
        store.put(marker, Bytes::new(), &folder).await.unwrap();
    }
    put(store.as_ref(), "lake/full/part-0.parquet", b"rows", true).await;
    // Not a marker: a zero-length file, and a non-empty blob claiming to be a folder.
    put(store.as_ref(), "lake/zero", b"", true).await;
    store
        .put("lake/claims", Bytes::from_static(b"data"), &folder)
        .await
        .unwrap();
    let m = Mount::new(store.clone(), "adls://acct/box");
    let fs = &m.fs;

    let lake = resolve(fs, "lake").await.unwrap().ino;
    assert_eq!(
        names(fs, lake).await,
        ["claims", "empty", "full", "nested", "zero"]
    );
    let kind = |attr: Attr| attr.kind;
    for dir in ["lake/empty", "lake/full", "lake/nested", "lake/nested/deep"] {
        assert_eq!(kind(resolve(fs, dir).await.unwrap()), Kind::Dir, "{dir}");
    }
    for file in ["lake/zero", "lake/claims", "lake/full/part-0.parquet"] {
        assert_eq!(kind(resolve(fs, file).await.unwrap()), Kind::File, "{file}");
    }
    let empty = resolve(fs, "lake/empty").await.unwrap().ino;
    assert!(names(fs, empty).await.is_empty(), "childless, and no file");
    let full = resolve(fs, "lake/full").await.unwrap().ino;
    assert_eq!(names(fs, full).await, ["part-0.parquet"]);
    assert_eq!(
        fs.getattr(lake).unwrap().nlink,
        2 + 3,
        "empty, full (marker and prefix, counted once) and nested"
    );
    assert_eq!(store.read_count(), 0);
}

// 6 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xattrs_give_digests_uri_and_etag() {
    let store = Arc::new(MemoryStore::new());
    let data = pattern(300_000, 21);
    let plain = pattern(100_000, 22);
    put(store.as_ref(), "pre/sub/file.bin", &data, true).await;
    put(store.as_ref(), "pre/nodigest.bin", &plain, false).await;
    let m = Mount::new(store.clone(), "adls://acct/box/pre");
    let fs = &m.fs;

    let file = resolve(fs, "sub/file.bin").await.unwrap().ino;
    assert_eq!(
        fs.listxattr(file).unwrap(),
        [
            "user.hash.xxh3_128",
            "user.hash.md5",
            "user.adls.uri",
            "user.adls.etag"
        ]
    );
    assert_eq!(
        fs.getxattr(file, "user.hash.xxh3_128").await.unwrap(),
        digest::xxh3_128(&data).as_bytes()
    );
    assert_eq!(
        fs.getxattr(file, "user.hash.md5").await.unwrap(),
        digest::md5(&data).as_bytes()
    );
    assert_eq!(
        fs.getxattr(file, "user.adls.uri").await.unwrap(),
        b"adls://acct/box/pre/sub/file.bin",
        "the full blob name, not relative to the mounted prefix"
    );
    let head = store.head("pre/sub/file.bin").await.unwrap();
    assert_eq!(
        fs.getxattr(file, "user.adls.etag").await.unwrap(),
        head.etag.as_bytes()
    );
    for unknown in ["user.nope", "user.hash.sha256", "security.selinux", ""] {
        assert_eq!(
            errno(fs.getxattr(file, unknown).await),
            libc::ENODATA,
            "{unknown:?}"
        );
    }
    assert_eq!(
        store.read_count(),
        0,
        "a digest in metadata needs no download"
    );

    // No xxh3 metadata: reading the xattr materialises and hashes the file.
    let nodigest = resolve(fs, "nodigest.bin").await.unwrap().ino;
    assert_eq!(
        fs.getxattr(nodigest, "user.hash.xxh3_128").await.unwrap(),
        digest::xxh3_128(&plain).as_bytes()
    );
    let reads = store.read_count();
    assert_eq!(reads, (plain.len() as u64).div_ceil(CHUNK));
    assert_eq!(m.v1_files().len(), 1);
    assert_eq!(
        fs.getxattr(nodigest, "user.hash.xxh3_128").await.unwrap(),
        digest::xxh3_128(&plain).as_bytes()
    );
    let open = fs.open(nodigest, false).await.unwrap();
    assert!(read_all(fs, open.fh).await == plain);
    assert_eq!(store.read_count(), reads, "hashed once, downloaded once");

    // Directories have no attributes.
    for dir in [ROOT_INO, resolve(fs, "sub").await.unwrap().ino] {
        assert!(fs.listxattr(dir).unwrap().is_empty());
        assert_eq!(
            errno(fs.getxattr(dir, "user.hash.xxh3_128").await),
            libc::ENODATA
        );
        assert_eq!(
            errno(fs.getxattr(dir, "user.adls.uri").await),
            libc::ENODATA
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_without_content_md5_has_no_md5_xattr() {
    let store = without_md5();
    put(store.as_ref(), "f", b"data", true).await;
    let m = Mount::new(store.clone(), "adls://acct/box");
    let ino = resolve(&m.fs, "f").await.unwrap().ino;
    assert_eq!(
        m.fs.listxattr(ino).unwrap(),
        ["user.hash.xxh3_128", "user.adls.uri", "user.adls.etag"]
    );
    assert_eq!(
        errno(m.fs.getxattr(ino, "user.hash.md5").await),
        libc::ENODATA
    );
    assert_eq!(
        m.fs.getxattr(ino, "user.hash.xxh3_128").await.unwrap(),
        digest::xxh3_128(b"data").as_bytes()
    );
}

// 7 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mount_is_read_only_and_kinds_are_enforced() {
    let store = Arc::new(MemoryStore::new());
    put(store.as_ref(), "dir/file", b"content", true).await;
    let m = Mount::new(store.clone(), "adls://acct/box");
    let fs = &m.fs;
    let dir = resolve(fs, "dir").await.unwrap().ino;
    let file = resolve(fs, "dir/file").await.unwrap().ino;

    assert_eq!(errno(fs.open(file, true).await), libc::EROFS);
    assert_eq!(
        store.read_count(),
        0,
        "a refused write-open downloads nothing"
    );
    assert_eq!(errno(fs.open(dir, false).await), libc::EISDIR);
    assert_eq!(errno(fs.open(ROOT_INO, false).await), libc::EISDIR);
    assert_eq!(errno(fs.lookup(file, "x").await), libc::ENOTDIR);
    assert_eq!(errno(fs.opendir(file)), libc::ENOTDIR);
    assert_eq!(errno(fs.lookup(dir, "missing").await), libc::ENOENT);
    assert_eq!(errno(fs.lookup(ROOT_INO, "missing").await), libc::ENOENT);
    assert_eq!(errno(fs.getattr(987_654)), libc::ENOENT);
    assert_eq!(errno(fs.open(987_654, false).await), libc::ENOENT);
    assert_eq!(errno(fs.read(424_242, 0, 10).await), libc::EBADF);
    assert!(m.v1_files().is_empty());

    // A read-only open still works.
    let open = fs.open(file, false).await.unwrap();
    assert_eq!(fs.read(open.fh, 0, 100).await.unwrap(), b"content");
}

// 8 ───────────────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_blob_gets_a_new_inode_after_the_ttl_and_old_handles_keep_old_bytes() {
    let ttl = Duration::from_millis(500);
    let store = Arc::new(MemoryStore::new());
    let old = pattern(200_000, 31);
    let new = pattern(150_001, 32);
    let old_meta = put(store.as_ref(), "f", &old, true).await;
    put(store.as_ref(), "same", b"unchanged", true).await;
    let m = Mount::with_ttl(store.clone(), ttl);
    let fs = &m.fs;

    let first = fs.lookup(ROOT_INO, "f").await.unwrap();
    let same = fs.lookup(ROOT_INO, "same").await.unwrap();
    let old_open = fs.open(first.ino, false).await.unwrap();
    let dir_fh = fs.opendir(ROOT_INO).unwrap();
    let snapshot = fs.readdir(ROOT_INO, dir_fh, 0).await.unwrap();

    let new_meta = put(store.as_ref(), "f", &new, true).await;
    assert_ne!(new_meta.etag, old_meta.etag);
    put(store.as_ref(), "added", b"+", true).await;

    // Within the TTL the cached listing answers.
    let cached = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!((cached.ino, cached.size), (first.ino, old.len() as u64));

    tokio::time::sleep(ttl * 3).await;
    let second = fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_ne!(second.ino, first.ino, "a new version is a new inode");
    assert_eq!(second.size, new.len() as u64);
    assert_eq!(second.mtime, new_meta.last_modified);
    assert_eq!(
        fs.lookup(ROOT_INO, "same").await.unwrap().ino,
        same.ino,
        "an unchanged blob keeps its inode across refreshes"
    );
    assert_eq!(fs.lookup(ROOT_INO, "added").await.unwrap().size, 1);

    // The old handle reads the old version; the old inode still answers.
    assert!(read_all(fs, old_open.fh).await == old);
    assert_eq!(fs.getattr(first.ino).unwrap().size, old.len() as u64);
    assert_eq!(
        fs.getxattr(first.ino, "user.adls.etag").await.unwrap(),
        old_meta.etag.as_bytes()
    );
    assert_eq!(
        fs.getxattr(second.ino, "user.adls.etag").await.unwrap(),
        new_meta.etag.as_bytes()
    );

    // The new inode opens the new version, while the old handle is still readable.
    let new_open = fs.open(second.ino, false).await.unwrap();
    assert!(read_all(fs, new_open.fh).await == new);
    assert!(read_all(fs, old_open.fh).await == old);
    assert_eq!(m.v1_files().len(), 2, "each version is its own cache entry");

    // A directory handle keeps reading the snapshot it took at offset 0.
    let later = fs.readdir(ROOT_INO, dir_fh, 2).await.unwrap();
    assert!(Arc::ptr_eq(&later, &snapshot));
    fs.releasedir(dir_fh);
    assert_eq!(names(fs, ROOT_INO).await, ["added", "f", "same"]);

    // Once the handle is released and the kernel forgets it, the old inode goes away.
    fs.release(old_open.fh);
    fs.forget(first.ino, 2);
    assert_eq!(errno(fs.getattr(first.ino)), libc::ENOENT);
    assert_eq!(fs.getattr(second.ino).unwrap().size, new.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaced_versions_nobody_refers_to_do_not_accumulate() {
    // `ls` (readdir without lookups) of a directory whose blob keeps changing: the old
    // versions' inodes are referenced by nothing (no lookup count, no open handle, not in
    // the current listing) and must not pile up for the life of the mount.
    let ttl = Duration::from_millis(20);
    let store = Arc::new(MemoryStore::new());
    put(store.as_ref(), "churn", b"v0", true).await;
    let m = Mount::with_ttl(store.clone(), ttl);
    names(&m.fs, ROOT_INO).await;
    let baseline = m.fs.inode_count();
    for i in 1..=10 {
        put(store.as_ref(), "churn", format!("v{i}").as_bytes(), true).await;
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(names(&m.fs, ROOT_INO).await, ["churn"]);
    }
    assert_eq!(
        m.fs.inode_count(),
        baseline,
        "unreferenced inodes of replaced blob versions are kept forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_locks_do_not_outlive_their_listings() {
    // The per-directory listing lock map used to keep one entry for every directory ever
    // listed; it now holds only directories being listed right now.
    let store = Arc::new(MemoryStore::new());
    for d in 0..20 {
        put(store.as_ref(), &format!("d{d}/f"), b"x", true).await;
    }
    let m = Mount::new(store.clone(), "adls://acct/box");
    let fs = Arc::clone(&m.fs);
    let tasks: Vec<_> = (0..20)
        .flat_map(|d| [d, d]) // two lookups per directory, racing for its listing
        .map(|d| {
            let fs = Arc::clone(&fs);
            tokio::spawn(async move { resolve(&fs, &format!("d{d}/f")).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().kind, Kind::File);
    }
    assert_eq!(
        m.fs.listings_in_flight(),
        0,
        "no listing lock outlived its listing"
    );
}

// 12 reads during the fetch ──────────────────────────────────────────────────────────────

/// One 64 KiB range at a time, each answered after `delay`: a download that takes a
/// while, so what happens before its end can be seen.
fn slow(store: &Arc<FaultyStore>, delay: Duration) -> NativeConfig {
    store.delay(Op::Read, delay);
    NativeConfig {
        chunk_size: CHUNK,
        parallelism: 1,
        ..NativeConfig::default()
    }
}

async fn put_slow_file(size: usize, delay: Duration) -> (Arc<FaultyStore>, Mount, Vec<u8>, Ino) {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let data = pattern(size, 12);
    put(store.as_ref(), "s.bin", &data, true).await;
    let native = slow(&store, delay);
    let m = Mount::streaming(store.clone(), native);
    let ino = resolve(&m.fs, "s.bin").await.unwrap().ino;
    (store, m, data, ino)
}

/// Waits until the file's download is published (its cache entry is there).
async fn published(m: &Mount) {
    for _ in 0..500 {
        if !m.v1_files().is_empty() && m.tmp_files().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the download was never published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_returns_before_the_file_lands_and_each_read_waits_only_for_its_bytes() {
    // 32 ranges of 64 KiB, 30 ms each: about a second for the whole file.
    let (store, m, data, ino) = put_slow_file(2 * MIB, Duration::from_millis(30)).await;
    let started = std::time::Instant::now();
    let open = m.fs.open(ino, false).await.unwrap();
    let head = m.fs.read(open.fh, 0, 4096).await.unwrap();
    let first_bytes = started.elapsed();
    assert!(head == data[..4096]);
    assert!(
        first_bytes < Duration::from_millis(400),
        "the first 4 KiB took {first_bytes:?}"
    );
    assert!(
        m.v1_files().is_empty(),
        "nothing is published before the whole file"
    );
    assert!(read_all(&m.fs, open.fh).await == data);
    published(&m).await;
    assert_eq!(
        store.bytes_read(),
        data.len() as u64,
        "every byte fetched once"
    );
    m.fs.flush(open.fh).unwrap();
    m.fs.release(open.fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_far_from_the_download_front_fetches_its_own_range_at_once() {
    let (store, m, data, ino) = put_slow_file(4 * MIB, Duration::from_millis(30)).await;
    let open = m.fs.open(ino, false).await.unwrap();
    let started = std::time::Instant::now();
    let tail_at = data.len() as u64 - 65536;
    let tail = m.fs.read(open.fh, tail_at, 65536).await.unwrap();
    let took = started.elapsed();
    assert!(tail == data[tail_at as usize..]);
    // The background would need about two seconds to get there.
    assert!(
        took < Duration::from_millis(500),
        "the footer took {took:?}"
    );
    assert!(read_all(&m.fs, open.fh).await == data);
    published(&m).await;
    assert_eq!(
        store.bytes_read(),
        data.len() as u64,
        "the footer's range was not fetched twice"
    );
    m.fs.release(open.fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_readers_at_different_offsets_share_one_download() {
    let (store, m, data, ino) = put_slow_file(4 * MIB, Duration::from_millis(5)).await;
    let data = Arc::new(data);
    let readers: Vec<_> = (0..16u64)
        .map(|i| {
            let (fs, data) = (Arc::clone(&m.fs), Arc::clone(&data));
            tokio::spawn(async move {
                let open = fs.open(ino, false).await.unwrap();
                // Each reads 256 KiB sequentially from its own offset, in 128 KiB reads.
                let start = i * (data.len() as u64 / 16) + 12_345;
                for k in 0..2u64 {
                    let at = start + k * 131072;
                    let got = fs.read(open.fh, at, 131072).await.unwrap();
                    let end = (at as usize + 131072).min(data.len());
                    assert!(got == data[at as usize..end], "reader {i} at {at}");
                }
                fs.release(open.fh);
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    published(&m).await;
    let fetched = store.bytes_read();
    assert!(
        fetched as f64 <= 1.05 * data.len() as f64,
        "{fetched} bytes fetched for {}",
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_final_check_fails_the_reads_and_flushes_of_every_open_handle() {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let data = pattern(2 * MIB, 13);
    store
        .put(
            "bad.bin",
            Bytes::from(data.clone()),
            &common::with_digest(b"other"),
        )
        .await
        .unwrap();
    let native = slow(&store, Duration::from_millis(10));
    let m = Mount::streaming(store.clone(), native);
    let ino = resolve(&m.fs, "bad.bin").await.unwrap().ino;
    let (a, b) = (
        m.fs.open(ino, false).await.unwrap(),
        m.fs.open(ino, false).await.unwrap(),
    );
    assert!(
        m.fs.read(a.fh, 0, 4096).await.unwrap() == data[..4096],
        "served early"
    );
    m.fs.flush(a.fh)
        .expect("no verdict yet: a flush does not wait for it");
    // The verdict comes after the last byte: reading to the end gets there.
    let mut at = 0u64;
    let err = loop {
        match m.fs.read(b.fh, at, 131072).await {
            Ok(piece) if piece.is_empty() => panic!("read to the end without an error"),
            Ok(piece) => at += piece.len() as u64,
            Err(e) => break e,
        }
        // The last bytes land just before the check: give it its moment.
        if at == data.len() as u64 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            at = 0;
        }
    };
    assert_eq!(err.errno(), libc::EIO, "{err}");
    for open in [&a, &b] {
        assert_eq!(errno(m.fs.read(open.fh, 0, 10).await), libc::EIO);
        assert_eq!(errno(m.fs.flush(open.fh)), libc::EIO);
    }
    assert!(
        m.v1_files().is_empty() && m.tmp_files().is_empty(),
        "nothing cached or left"
    );
    // One download: bytes served are never fetched again to be checked a second time.
    assert_eq!(store.bytes_read(), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checked_range_that_was_damaged_is_fetched_again_and_never_served() {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let data = pattern(6 * MIB, 14);
    put(store.as_ref(), "c.bin", &data, true).await;
    // The next read is the first range's: one byte of it flipped, its MD5 as sent.
    store.damage_reads(1, Damage::FlipByte(7));
    let native = NativeConfig {
        chunk_size: 8 << 20,
        parallelism: 1,
        check_ranges: true,
        ..NativeConfig::default()
    };
    let m = Mount::streaming(store.clone(), native);
    let ino = resolve(&m.fs, "c.bin").await.unwrap().ino;
    let open = m.fs.open(ino, false).await.unwrap();
    assert!(
        read_all(&m.fs, open.fh).await == data,
        "the flipped byte never reached the reader"
    );
    published(&m).await;
    // Ranges of at most 4 MiB, the damaged first one twice.
    assert_eq!(store.bytes_read(), data.len() as u64 + 4 * MIB as u64);
    m.fs.flush(open.fh).unwrap();
}
