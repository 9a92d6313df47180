//! `adlsfs upload`: files to blobs, each with its xxh3_128 digest in `hash_xxh3_128_b64`,
//! the metadata the mount verifies against.

use crate::digest::{xxh3_128_file, XXH3_METADATA_KEY};
use crate::location::Location;
use crate::storage::{BlobMeta, BlobStore, Metadata, Result, StorageError};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};

/// Uploads `source` (a file, or a directory recursively) under `location`'s prefix and
/// returns the resulting blobs in the order of their names.
pub async fn upload(
    store: &dyn BlobStore,
    source: &Path,
    location: &Location,
    parallel: usize,
) -> Result<Vec<BlobMeta>> {
    let local_err = |source_err| StorageError::LocalIo {
        path: source.display().to_string(),
        source: source_err,
    };
    let files = if source.is_dir() {
        let mut files = Vec::new();
        collect_files(source, source, &mut files).map_err(local_err)?;
        files
    } else {
        let name = source
            .file_name()
            .ok_or_else(|| local_err(std::io::Error::other("no file name")))?
            .to_string_lossy()
            .into_owned();
        vec![(source.to_path_buf(), name)]
    };
    let mut uploaded: Vec<BlobMeta> = stream::iter(files)
        .map(|(path, relative)| async move {
            let blob = location.blob_name(&relative);
            upload_file(store, &path, &blob).await
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    uploaded.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(uploaded)
}

/// Hashes the file, then uploads it with the digest in its metadata.
pub async fn upload_file(store: &dyn BlobStore, path: &Path, blob: &str) -> Result<BlobMeta> {
    let owned = path.to_path_buf();
    let (digest, _) = tokio::task::spawn_blocking(move || xxh3_128_file(&owned))
        .await
        .expect("hashing task panicked")
        .map_err(|source| StorageError::LocalIo {
            path: path.display().to_string(),
            source,
        })?;
    let metadata = Metadata::from([(XXH3_METADATA_KEY.to_string(), digest.to_base64())]);
    store.put_file(blob, path, &metadata).await
}

/// Regular files under `dir`, with `/`-separated paths relative to `root`, sorted.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("walked path is under the root")
                .to_string_lossy()
                .into_owned();
            out.push((path, relative));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::xxh3_128;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn uploads_a_tree_with_digests_in_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("hello.txt"), b"hello world\n").unwrap();
        std::fs::write(dir.path().join("sub/empty"), b"").unwrap();
        let store = MemoryStore::new();
        let location: Location = "adls://acct/box/pre".parse().unwrap();
        let blobs = upload(&store, dir.path(), &location, 4).await.unwrap();
        let names: Vec<_> = blobs.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["pre/hello.txt", "pre/sub/empty"]);
        assert_eq!(blobs[0].xxh3().unwrap(), Some(xxh3_128(b"hello world\n")));
        assert_eq!(blobs[1].xxh3().unwrap(), Some(xxh3_128(b"")));
    }
}
