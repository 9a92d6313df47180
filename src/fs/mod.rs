//! The filesystem core, free of FUSE types: inodes from listings (cached for a TTL), opens
//! that materialise blobs into the cache, reads from cache files, and the digests and
//! identity of each file as extended attributes. `src/fuse/` adapts it to the kernel.

pub mod error;
pub mod inode;
pub mod names;

use crate::cache::layout::EntryKey;
use crate::cache::{read_at, CachedFile};
use crate::digest::{xxh3_128_file, Xxh3Digest};
use crate::error::{Classify, ErrorKind};
use crate::location::Location;
use crate::materialise::download::{Download, Opened, StreamError};
use crate::materialise::{MaterialiseError, Materialiser};
use crate::single_flight::SingleFlight;
use crate::storage::BlobStore;
pub use error::FsError;
use inode::{FileNode, InodeTable, NodeKind};
pub use inode::{Ino, ROOT_INO};
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub type Result<T, E = FsError> = std::result::Result<T, E>;

pub const XATTR_XXH3: &str = "user.hash.xxh3_128";
pub const XATTR_MD5: &str = "user.hash.md5";
pub const XATTR_URI: &str = "user.adls.uri";
pub const XATTR_ETAG: &str = "user.adls.etag";

/// Whether `name` is one of the extended attributes a file of the mount can have.
pub fn is_known_xattr(name: &str) -> bool {
    matches!(name, XATTR_XXH3 | XATTR_MD5 | XATTR_URI | XATTR_ETAG)
}

/// Block size reported to `stat`, for `st_blocks` in 512-byte units.
const BLOCK_SIZE: u64 = 512;

#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long listings and attributes are trusted before the service is asked again.
    pub metadata_ttl: Duration,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// Where an open file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// The verified cache file.
    Cached(Arc<File>),
    /// The download in progress: reads wait for the bytes they cover; once it is
    /// published, the entry it made.
    Streaming(Arc<Download>),
}

/// An open file.
#[derive(Debug, Clone)]
pub struct OpenFile {
    pub fh: u64,
    pub ino: Ino,
    pub content: Content,
}

impl OpenFile {
    /// The verified cache file, when the open found one (passthrough needs it).
    pub fn cached_file(&self) -> Option<&File> {
        match &self.content {
            Content::Cached(file) => Some(file),
            Content::Streaming(_) => None,
        }
    }
}

pub struct AdlsFs {
    location: Location,
    store: Arc<dyn BlobStore>,
    materialiser: Arc<Materialiser>,
    config: FsConfig,
    mounted_at: SystemTime,
    inodes: Mutex<InodeTable>,
    /// One listing per directory at a time; waiters reuse its result.
    listings: SingleFlight<Ino>,
    handles: Mutex<HashMap<u64, OpenFile>>,
    dir_snapshots: Mutex<HashMap<u64, Option<Arc<Vec<DirEntry>>>>>,
    next_fh: AtomicU64,
}

impl AdlsFs {
    pub fn new(
        location: Location,
        store: Arc<dyn BlobStore>,
        materialiser: Arc<Materialiser>,
        config: FsConfig,
    ) -> Self {
        let root_prefix = location.dir_prefix();
        Self {
            location,
            store,
            materialiser,
            config,
            mounted_at: SystemTime::now(),
            inodes: Mutex::new(InodeTable::new(&root_prefix)),
            listings: SingleFlight::new(),
            handles: Mutex::new(HashMap::new()),
            dir_snapshots: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, InodeTable> {
        self.inodes.lock().expect("inode table")
    }

    /// Lists the directory again when its listing is missing or older than the TTL.
    async fn ensure_fresh(&self, dir: Ino) -> Result<()> {
        let is_fresh = |table: &InodeTable| -> Result<Option<String>> {
            match table.get(dir).map(|n| &n.kind) {
                None => Err(FsError::NotFound),
                Some(NodeKind::File(_)) => Err(FsError::NotDir),
                Some(NodeKind::Dir(d)) => Ok(match &d.children {
                    Some(c) if !c.stale && c.fetched.elapsed() < self.config.metadata_ttl => None,
                    _ => Some(d.prefix.clone()),
                }),
            }
        };
        let Some(_) = is_fresh(&self.table())? else {
            return Ok(());
        };
        let _listing = self.listings.enter(dir).await;
        // Whoever held the lock may have just listed it.
        let Some(prefix) = is_fresh(&self.table())? else {
            return Ok(());
        };
        let listing = self.store.list_dir(&prefix).await.inspect_err(|e| {
            tracing::error!(location = %self.location, prefix = %prefix, error = %e, "listing failed");
        })?;
        self.table().apply_listing(dir, listing, Instant::now());
        Ok(())
    }

    fn attr_of(&self, table: &InodeTable, ino: Ino) -> Result<Attr> {
        let node = table.get(ino).ok_or(FsError::NotFound)?;
        Ok(match &node.kind {
            NodeKind::Dir(d) => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                blocks: 0,
                mtime: self.mounted_at,
                perm: self.config.dir_mode,
                // 2 + subdirectories once listed; 1 ("unknown") before, which keeps tools
                // like find from assuming a leaf directory.
                nlink: d.children.as_ref().map_or(1, |c| 2 + c.subdirs),
                uid: self.config.uid,
                gid: self.config.gid,
            },
            NodeKind::File(f) => Attr {
                ino,
                kind: Kind::File,
                size: f.meta.size,
                blocks: f.meta.size.div_ceil(BLOCK_SIZE),
                mtime: f.meta.last_modified,
                perm: self.config.file_mode,
                nlink: 1,
                uid: self.config.uid,
                gid: self.config.gid,
            },
        })
    }

    /// Finds `name` in `parent`, counting one kernel reference on success.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr> {
        self.ensure_fresh(parent).await?;
        let mut table = self.table();
        let ino = match table.get(parent).map(|n| &n.kind) {
            Some(NodeKind::Dir(d)) => d
                .children
                .as_ref()
                .and_then(|c| c.entries.get(name).copied())
                .ok_or(FsError::NotFound)?,
            Some(NodeKind::File(_)) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        };
        let attr = self.attr_of(&table, ino)?;
        if let Some(node) = table.get_mut(ino) {
            node.lookups += 1;
        }
        Ok(attr)
    }

    /// Counts a kernel reference handed out other than by lookup (readdirplus entries).
    pub fn remember(&self, ino: Ino) {
        if let Some(node) = self.table().get_mut(ino) {
            node.lookups += 1;
        }
    }

    /// The parent directory of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Ino {
        self.table().get(ino).map_or(ROOT_INO, |n| n.parent)
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        self.table().forget(ino, n);
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.attr_of(&self.table(), ino)
    }

    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        match self.table().get(ino).map(|n| &n.kind) {
            Some(NodeKind::Dir(_)) => {}
            Some(NodeKind::File(_)) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dir_snapshots
            .lock()
            .expect("dir handles")
            .insert(fh, None);
        Ok(fh)
    }

    /// The directory's entries (without `.` and `..`). A handle reads one snapshot, taken
    /// at offset 0, so offsets stay meaningful while the listing refreshes underneath.
    pub async fn readdir(&self, ino: Ino, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        if offset > 0 {
            if let Some(Some(snapshot)) = self.dir_snapshots.lock().expect("dir handles").get(&fh) {
                return Ok(Arc::clone(snapshot));
            }
        }
        self.ensure_fresh(ino).await?;
        let entries = {
            let table = self.table();
            let children = match table.get(ino).map(|n| &n.kind) {
                Some(NodeKind::Dir(d)) => d.children.clone(),
                _ => None,
            };
            let children = children.ok_or(FsError::NotFound)?;
            let mut entries = Vec::with_capacity(children.entries.len());
            for (name, child) in children.entries {
                entries.push(DirEntry {
                    name,
                    attr: self.attr_of(&table, child)?,
                });
            }
            Arc::new(entries)
        };
        if let Some(slot) = self.dir_snapshots.lock().expect("dir handles").get_mut(&fh) {
            *slot = Some(Arc::clone(&entries));
        }
        Ok(entries)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dir_snapshots.lock().expect("dir handles").remove(&fh);
    }

    fn file_node(&self, ino: Ino) -> Result<Arc<FileNode>> {
        match self.table().get(ino).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => Ok(Arc::clone(f)),
            Some(NodeKind::Dir(_)) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    fn entry_key(&self, node: &FileNode) -> EntryKey {
        EntryKey::for_blob(&self.location, &node.meta)
    }

    fn log_failure(&self, node: &FileNode, e: &MaterialiseError) {
        tracing::error!(
            blob = %self.location.blob_uri(&node.meta.name),
            error = %e,
            "could not materialise; the open fails and nothing was cached"
        );
    }

    /// The verified cache file of a file inode, downloading it on first use.
    async fn materialise(&self, node: &FileNode) -> Result<CachedFile> {
        let cached = self
            .materialiser
            .ensure(&self.entry_key(node), &node.meta)
            .await
            .inspect_err(|e| self.log_failure(node, e))?;
        if let Some(d) = cached.xxh3 {
            let _ = node.digest.set(d);
        }
        Ok(cached)
    }

    /// Opens a file for reading. A cached file opens at once; otherwise its download
    /// starts and the open returns once the service has confirmed the listed version (or,
    /// with `--verify-before-read`, once the whole file is verified). Writers get EROFS.
    pub async fn open(&self, ino: Ino, write: bool) -> Result<OpenFile> {
        if write {
            return Err(FsError::ReadOnly);
        }
        let node = self.file_node(ino)?;
        let opened = self
            .materialiser
            .open_early(&self.entry_key(&node), &node.meta)
            .await
            .inspect_err(|e| {
                // The blob changed or disappeared since it was listed.
                if matches!(e.kind(), ErrorKind::Changed | ErrorKind::NotFound) {
                    // This inode's version is gone: the parent must be listed again.
                    let mut table = self.table();
                    let parent = table.get(ino).map(|n| n.parent);
                    if let Some(parent) = parent {
                        table.invalidate(parent);
                    }
                }
            })
            .map_err(FsError::Open)?;
        let content = match opened {
            Opened::Published(held) => {
                if let Some(d) = held.cached.xxh3 {
                    let _ = node.digest.set(d);
                }
                Content::Cached(Arc::new(held.file))
            }
            Opened::Streaming(download) => Content::Streaming(download),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let open = OpenFile { fh, ino, content };
        self.handles
            .lock()
            .expect("handles")
            .insert(fh, open.clone());
        if let Some(n) = self.table().get_mut(ino) {
            n.opens += 1;
        }
        Ok(open)
    }

    /// The read when it needs no waiting (a cached file, or landed bytes), so the
    /// adapter can answer it inline; `None` when it must wait for the download.
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
        let open = match self.handle(fh) {
            Ok(open) => open,
            Err(e) => return Some(Err(e)),
        };
        match &open.content {
            Content::Cached(file) => {
                Some(read_at(file, offset, size as usize).map_err(FsError::from))
            }
            Content::Streaming(d) => d.read_now(offset, size).map(|r| r.map_err(FsError::from)),
        }
    }

    /// Reads from an open file (for kernels without passthrough, and for files still
    /// arriving), waiting for the bytes it covers to land.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let open = self.handle(fh)?;
        match &open.content {
            Content::Cached(file) => Ok(read_at(file, offset, size as usize)?),
            Content::Streaming(d) => Ok(d.read(offset, size).await?),
        }
    }

    /// A close of a descriptor: fails (EIO) once the file's download or final check
    /// failed, so a reader that got bytes of a version that did not verify learns it.
    /// Never waits for the verdict.
    pub fn flush(&self, fh: u64) -> Result<()> {
        match self.handle(fh)?.content {
            Content::Streaming(d) => match d.failure() {
                Some(e) => Err(StreamError::Failed(e).into()),
                None => Ok(()),
            },
            Content::Cached(_) => Ok(()),
        }
    }

    pub fn handle(&self, fh: u64) -> Result<OpenFile> {
        self.handles
            .lock()
            .expect("handles")
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub fn release(&self, fh: u64) {
        let Some(open) = self.handles.lock().expect("handles").remove(&fh) else {
            return;
        };
        let mut table = self.table();
        if let Some(n) = table.get_mut(open.ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        table.remove_if_unused(open.ino);
    }

    /// Names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<&'static str>> {
        let node = match self.file_node(ino) {
            Ok(node) => node,
            Err(FsError::IsDir) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = vec![XATTR_XXH3];
        if node.meta.content_md5.is_some() {
            names.push(XATTR_MD5);
        }
        names.extend([XATTR_URI, XATTR_ETAG]);
        Ok(names)
    }

    /// The value of one extended attribute. Digests recorded in metadata are answered
    /// without downloading; a missing xxh3 materialises and hashes the file.
    pub async fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>> {
        if let Some(answer) = self.getxattr_now(ino, name) {
            return answer;
        }
        let node = self.file_node(ino)?;
        Ok(self.xxh3_of(&node).await?.as_bytes().to_vec())
    }

    /// The attribute's value when it needs no download or hashing (`None` otherwise), so
    /// the adapter can answer at once: `ls -l` asks every file for ACL attributes.
    pub fn getxattr_now(&self, ino: Ino, name: &str) -> Option<Result<Vec<u8>>> {
        let node = match self.file_node(ino) {
            Ok(node) => node,
            Err(FsError::IsDir) => return Some(Err(FsError::NoAttribute)),
            Err(e) => return Some(Err(e)),
        };
        Some(match name {
            XATTR_XXH3 => return node.digest.get().map(|d| Ok(d.as_bytes().to_vec())),
            XATTR_MD5 => node
                .meta
                .content_md5
                .map(|d| d.as_bytes().to_vec())
                .ok_or(FsError::NoAttribute),
            XATTR_URI => Ok(self.location.blob_uri(&node.meta.name).into_bytes()),
            XATTR_ETAG => Ok(node.meta.etag.clone().into_bytes()),
            _ => Err(FsError::NoAttribute),
        })
    }

    async fn xxh3_of(&self, node: &FileNode) -> Result<Xxh3Digest> {
        if let Some(d) = node.digest.get() {
            return Ok(*d);
        }
        let cached = self.materialise(node).await?;
        let digest = match cached.xxh3 {
            Some(d) => d,
            None => {
                let path = cached.path.clone();
                tokio::task::spawn_blocking(move || xxh3_128_file(&path))
                    .await
                    .expect("hash task panicked")?
                    .0
            }
        };
        let _ = node.digest.set(digest);
        Ok(digest)
    }

    /// Directories being listed right now (for tests: the single-flight map empties).
    pub fn listings_in_flight(&self) -> usize {
        self.listings.len()
    }

    /// Number of inodes known (for tests and stats).
    pub fn inode_count(&self) -> usize {
        self.table().len()
    }
}
