//! Block uploads: ids that satisfy the service's rules, and the upload of a local file as
//! staged blocks plus one conditional commit. Written once against the trait, so every
//! store (Azure and the in-memory fake) runs the same code path, for any blob name.

use super::{BlobMeta, BlobStore, BlobWrite, Result, StorageError};
use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, TryStreamExt};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Part size of block uploads; files up to this size go up in one Put Blob.
pub const UPLOAD_PART_SIZE: usize = 8 << 20;
/// Blocks in flight at once during one file's upload.
const UPLOAD_CONCURRENCY: usize = 4;
/// The service's limit on blocks in one blob: larger files get larger parts.
const MAX_BLOCKS: u64 = 50_000;

/// The id of one block of a blob: base64 of the block's zero-padded 20-digit index (any `u64`), so
/// every id of a blob has the same length, as the service requires, and ids sort by index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(String);

impl BlockId {
    pub fn from_index(index: u64) -> Self {
        Self(base64::engine::general_purpose::STANDARD.encode(format!("{index:020}")))
    }

    /// The id as sent to the service (base64).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A block as [`BlobStore::put_block`] staged it: its id and its size in bytes, which
/// the commit sums into the blob's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedBlock {
    pub id: BlockId,
    pub size: u64,
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Uploads the file at `path`: one `put_if` when it fits in `part_size`, else parts of
/// `part_size` (grown to stay within the service's block limit), at most
/// [`UPLOAD_CONCURRENCY`] staged at once, then a commit with the write's condition.
pub(super) async fn put_file<S: BlobStore + ?Sized>(
    store: &S,
    write: &BlobWrite,
    path: &Path,
    part_size: usize,
) -> Result<BlobMeta> {
    let io_err = |source| StorageError::LocalIo {
        path: path.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
    let size = file.metadata().await.map_err(io_err)?.len();
    if size <= part_size as u64 {
        let mut data = Vec::with_capacity(size as usize);
        file.read_to_end(&mut data).await.map_err(io_err)?;
        return store.put_if(write, Bytes::from(data)).await;
    }
    let part_size = part_size_for(size, part_size);
    let parts = stream::try_unfold((file, 0u64), |(mut file, index)| async move {
        let part = read_part(&mut file, part_size).await?;
        Ok::<_, std::io::Error>(
            (!part.is_empty()).then(|| ((BlockId::from_index(index), part), (file, index + 1))),
        )
    });
    let blocks: Vec<StagedBlock> = parts
        .map_err(io_err)
        .map_ok(|(id, part)| store.put_block(&write.name, id, part))
        .try_buffered(UPLOAD_CONCURRENCY)
        .try_collect()
        .await?;
    store.put_block_list(write, &blocks).await
}

/// `part_size`, or larger where the file would otherwise need more than [`MAX_BLOCKS`].
fn part_size_for(file_size: u64, part_size: usize) -> usize {
    (part_size as u64).max(file_size.div_ceil(MAX_BLOCKS)) as usize
}

/// Up to `len` bytes from `file`, fewer only at its end.
async fn read_part(file: &mut tokio::fs::File, len: usize) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::{FaultyStore, Op};
    use crate::storage::memory::MemoryStore;
    use std::sync::Arc;

    fn counted_store() -> FaultyStore {
        FaultyStore::new(Arc::new(MemoryStore::new()))
    }

    #[test]
    fn block_ids_have_equal_lengths_and_sort_by_index() {
        let ids: Vec<_> = [0, 1, 9, 10, 12_345, u64::MAX]
            .map(BlockId::from_index)
            .to_vec();
        assert!(ids
            .iter()
            .all(|id| id.as_str().len() == ids[0].as_str().len()));
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            BlockId::from_index(7).as_str(),
            "MDAwMDAwMDAwMDAwMDAwMDAwMDc="
        );
    }

    #[test]
    fn huge_files_get_parts_large_enough_to_stay_within_the_block_limit() {
        assert_eq!(part_size_for(1 << 30, UPLOAD_PART_SIZE), UPLOAD_PART_SIZE);
        let huge = 1u64 << 42; // 4 TiB: 524,288 parts of 8 MiB
        let part = part_size_for(huge, UPLOAD_PART_SIZE) as u64;
        assert!(part > UPLOAD_PART_SIZE as u64 && huge.div_ceil(part) <= MAX_BLOCKS);
    }

    #[tokio::test]
    async fn a_file_larger_than_a_part_goes_up_in_blocks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let store = counted_store();
        let meta = crate::storage::Metadata::from([("k".to_string(), "v".to_string())]);
        let write = BlobWrite::new("b", &meta, crate::storage::WriteCondition::IfNoneMatch);
        let upload = || put_file(&store, &write, &path, 1024);
        let put = upload().await.unwrap();
        assert_eq!(
            (put.size, &put.metadata, put.content_md5),
            (10_000, &meta, None)
        );
        assert_eq!(
            (store.calls(Op::PutBlock), store.calls(Op::Commit)),
            (10, 1)
        );
        let read = store.read("b", None, &put.etag).await.unwrap();
        assert_eq!(&read[..], &data[..]);
        // The commit carries the condition.
        let err = upload().await.unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_file_of_one_part_goes_up_in_one_put() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"small").unwrap();
        let store = counted_store();
        let write = BlobWrite::overwrite("b", &crate::storage::Metadata::new());
        let put = put_file(&store, &write, &path, 5).await.unwrap();
        assert_eq!(put.content_md5, Some(crate::digest::md5(b"small")));
        assert_eq!((store.calls(Op::Put), store.calls(Op::PutBlock)), (1, 0));
    }
}
