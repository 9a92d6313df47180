//! An in-memory [`BlobStore`] for fast tests of everything above storage. It follows the
//! service's rules that matter to adlsfs: delimiter listing, ETags that change on every put,
//! If-Match on reads, Content-MD5 computed on upload.

use super::{BlobMeta, BlobStore, DirListing, Metadata, Result, StorageError};
use crate::digest;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Default)]
pub struct MemoryStore {
    blobs: Mutex<BTreeMap<String, (BlobMeta, Bytes)>>,
    next_etag: AtomicU64,
    reads: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of [`BlobStore::read`] calls served, for single-flight assertions.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    fn lookup(&self, name: &str) -> Result<(BlobMeta, Bytes)> {
        self.blobs
            .lock()
            .expect("memory store lock")
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::NotFound {
                name: name.to_string(),
            })
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let blobs = self.blobs.lock().expect("memory store lock");
        let mut listing = DirListing::default();
        let mut dirs = BTreeSet::new();
        for (name, (meta, _)) in blobs.range(prefix.to_string()..) {
            let Some(rest) = name.strip_prefix(prefix) else {
                break;
            };
            match rest.find('/') {
                Some(i) => {
                    dirs.insert(format!("{prefix}{}", &rest[..=i]));
                }
                None => listing.files.push(meta.clone()),
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

    async fn put(&self, name: &str, data: Bytes, metadata: &Metadata) -> Result<BlobMeta> {
        let n = self.next_etag.fetch_add(1, Ordering::SeqCst);
        let meta = BlobMeta {
            name: name.to_string(),
            size: data.len() as u64,
            last_modified: SystemTime::now(),
            etag: format!("\"0xMEM{n:012X}\""),
            content_md5: Some(digest::md5(&data)),
            metadata: metadata.clone(),
        };
        self.blobs
            .lock()
            .expect("memory store lock")
            .insert(name.to_string(), (meta.clone(), data));
        Ok(meta)
    }
}
