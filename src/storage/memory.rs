//! An in-memory [`BlobStore`] for fast tests of everything above storage. It follows the
//! service's rules that matter to adlsfs: delimiter listing, ETags that change on every
//! write, If-Match on reads, write conditions, Content-MD5 computed for Put Blob (not for
//! a block list), staged blocks invisible until a commit that names them.

use super::{
    check_md5_range, BlobMeta, BlobStore, BlobWrite, BlockId, CheckedRange, DirListing, Result,
    StagedBlock, StorageError,
};
use crate::digest;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    next_etag: AtomicU64,
    reads: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    blobs: BTreeMap<String, Blob>,
    /// Uncommitted blocks per blob name (the blob itself may not exist yet).
    staged: HashMap<String, HashMap<BlockId, Bytes>>,
}

#[derive(Debug, Clone)]
struct Blob {
    meta: BlobMeta,
    data: Bytes,
    /// The blocks of the last committed block list (none after a Put Blob): a commit may
    /// name them again, as the service's `<Latest>` allows.
    committed: HashMap<BlockId, Bytes>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of [`BlobStore::read`] (and [`BlobStore::read_range_md5`]) calls served, for
    /// single-flight assertions.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }

    fn lookup(&self, name: &str) -> Result<(BlobMeta, Bytes)> {
        self.state()
            .blobs
            .get(name)
            .map(|b| (b.meta.clone(), b.data.clone()))
            .ok_or_else(|| StorageError::NotFound {
                name: name.to_string(),
            })
    }

    /// Checks `condition`, then builds the new version's content, then stores it, all
    /// under one lock, as the service does atomically.
    fn write(
        &self,
        write: &BlobWrite,
        content: impl FnOnce(&State) -> Result<Content>,
    ) -> Result<BlobMeta> {
        let (name, metadata, condition) = (write.name.as_str(), &write.metadata, &write.condition);
        let mut state = self.state();
        let current = state.blobs.get(name).map(|b| b.meta.etag.as_str());
        condition.check(name, current)?;
        let content = content(&state)?;
        let n = self.next_etag.fetch_add(1, Ordering::SeqCst);
        let meta = BlobMeta {
            name: name.to_string(),
            size: content.data.len() as u64,
            last_modified: SystemTime::now(),
            etag: format!("\"0xMEM{n:012X}\""),
            content_md5: content.md5,
            metadata: metadata.clone(),
        };
        state.staged.remove(name);
        let blob = Blob {
            meta: meta.clone(),
            data: content.data,
            committed: content.blocks,
        };
        state.blobs.insert(name.to_string(), blob);
        Ok(meta)
    }
}

/// What one write stores.
struct Content {
    data: Bytes,
    md5: Option<digest::Md5Digest>,
    blocks: HashMap<BlockId, Bytes>,
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let state = self.state();
        let mut listing = DirListing::default();
        let mut dirs = BTreeSet::new();
        for (name, blob) in state.blobs.range(prefix.to_string()..) {
            let Some(rest) = name.strip_prefix(prefix) else {
                break;
            };
            match rest.find('/') {
                Some(i) => {
                    dirs.insert(format!("{prefix}{}", &rest[..=i]));
                }
                None => listing.files.push(blob.meta.clone()),
            }
        }
        listing.dirs = dirs.into_iter().collect();
        Ok(listing)
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        Ok(self.lookup(name)?.0)
    }

    async fn read(&self, name: &str, range: Option<Range<u64>>, etag: &str) -> Result<Bytes> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let (meta, data) = self.lookup(name)?;
        if meta.etag != etag {
            return Err(StorageError::Changed {
                name: name.to_string(),
                etag: etag.to_string(),
            });
        }
        let Some(range) = range else {
            return Ok(data);
        };
        if range.start >= meta.size || range.end > meta.size || range.start >= range.end {
            return Err(StorageError::Service {
                what: name.to_string(),
                status: 416,
                code: "InvalidRange".into(),
                message: format!("range {range:?} of a {}-byte blob", meta.size),
            });
        }
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    /// The range as [`BlobStore::read`] gives it, with the MD5 of the stored bytes.
    async fn read_range_md5(
        &self,
        name: &str,
        range: Range<u64>,
        etag: &str,
    ) -> Result<CheckedRange> {
        check_md5_range(name, &range)?;
        let data = self.read(name, Some(range), etag).await?;
        Ok(CheckedRange {
            md5: Some(digest::md5(&data)),
            data,
        })
    }

    async fn put_if(&self, write: &BlobWrite, data: Bytes) -> Result<BlobMeta> {
        self.write(write, |_| {
            Ok(Content {
                md5: Some(digest::md5(&data)),
                data,
                blocks: HashMap::new(),
            })
        })
    }

    async fn put_block(&self, name: &str, id: BlockId, data: Bytes) -> Result<StagedBlock> {
        let size = data.len() as u64;
        self.state()
            .staged
            .entry(name.to_string())
            .or_default()
            .insert(id.clone(), data);
        Ok(StagedBlock { id, size })
    }

    async fn put_block_list(&self, write: &BlobWrite, blocks: &[StagedBlock]) -> Result<BlobMeta> {
        let name = write.name.as_str();
        self.write(write, |state| {
            let staged = state.staged.get(name);
            let committed = state.blobs.get(name).map(|b| &b.committed);
            let mut blocks_by_id = HashMap::new();
            let mut data = BytesMut::new();
            for StagedBlock { id, size } in blocks {
                let block = staged
                    .and_then(|s| s.get(id))
                    .or_else(|| committed.and_then(|c| c.get(id)))
                    .ok_or_else(|| StorageError::Service {
                        what: name.to_string(),
                        status: 400,
                        code: "InvalidBlockList".into(),
                        message: format!("block {id} is neither staged nor committed"),
                    })?;
                if block.len() as u64 != *size {
                    return Err(StorageError::Client {
                        what: name.to_string(),
                        message: format!("block {id} has {} bytes, not {size}", block.len()),
                    });
                }
                data.extend_from_slice(block);
                blocks_by_id.insert(id.clone(), block.clone());
            }
            Ok(Content {
                data: data.freeze(),
                md5: None,
                blocks: blocks_by_id,
            })
        })
    }
}
