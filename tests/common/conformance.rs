//! The storage contract, run against every `BlobStore` (the in-memory fake and Azurite),
//! so the fake used by fast tests behaves like the service where adlsfs depends on it.

use adlsfs::digest::{self, XXH3_METADATA_KEY};
use adlsfs::storage::{BlobStore, Metadata, StorageError};
use bytes::Bytes;

pub async fn run_all(store: &dyn BlobStore) {
    nested_listing(store).await;
    head_metadata_and_md5(store).await;
    ranged_reads(store).await;
    if_match_after_overwrite(store).await;
    missing_blob(store).await;
}

fn meta_with_digest(data: &[u8]) -> Metadata {
    Metadata::from([(
        XXH3_METADATA_KEY.to_string(),
        digest::xxh3_128(data).to_base64(),
    )])
}

async fn nested_listing(store: &dyn BlobStore) {
    for name in [
        "c/top.txt",
        "c/a/one",
        "c/a/b/two",
        "c/z/three",
        "c-sibling",
    ] {
        store
            .put(
                name,
                Bytes::from(name.as_bytes().to_vec()),
                &Metadata::new(),
            )
            .await
            .unwrap();
    }
    let top = store.list_dir("c/").await.unwrap();
    let files: Vec<_> = top.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(files, ["c/top.txt"]);
    assert_eq!(top.dirs, ["c/a/", "c/z/"]);
    assert_eq!(top.files[0].size, "c/top.txt".len() as u64);
    let deeper = store.list_dir("c/a/").await.unwrap();
    assert_eq!(deeper.files.len(), 1);
    assert_eq!(deeper.dirs, ["c/a/b/"]);
    let none = store.list_dir("nothing-here/").await.unwrap();
    assert!(none.files.is_empty() && none.dirs.is_empty());
}

async fn head_metadata_and_md5(store: &dyn BlobStore) {
    let data = b"hello world\n";
    let put = store
        .put(
            "h/hello.txt",
            Bytes::from_static(data),
            &meta_with_digest(data),
        )
        .await
        .unwrap();
    let head = store.head("h/hello.txt").await.unwrap();
    assert_eq!(head, put);
    assert_eq!(head.size, 12);
    assert!(
        head.etag.starts_with('"') && head.etag.ends_with('"'),
        "{}",
        head.etag
    );
    assert_eq!(head.xxh3().unwrap(), Some(digest::xxh3_128(data)));
    assert_eq!(head.content_md5, Some(digest::md5(data)));
    // The listing carries the same metadata, so the mount needs no HEAD per file.
    let listed = store.list_dir("h/").await.unwrap();
    assert_eq!(listed.files[0].metadata, head.metadata);
    assert_eq!(listed.files[0].etag, head.etag);
    assert_eq!(listed.files[0].content_md5, head.content_md5);
}

async fn ranged_reads(store: &dyn BlobStore) {
    let data = super::pattern(1 << 20, 7);
    let meta = store
        .put("r/blob", Bytes::from(data.clone()), &Metadata::new())
        .await
        .unwrap();
    let len = data.len() as u64;
    for range in [0..4096, 500_000..600_001, len - 10..len, 0..len] {
        let got = store
            .read("r/blob", Some(range.clone()), &meta.etag)
            .await
            .unwrap();
        assert_eq!(
            &got[..],
            &data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    let whole = store.read("r/blob", None, &meta.etag).await.unwrap();
    assert_eq!(whole.len(), data.len());
    let empty = store
        .put("r/empty", Bytes::new(), &Metadata::new())
        .await
        .unwrap();
    assert_eq!(empty.size, 0);
    assert!(store
        .read("r/empty", None, &empty.etag)
        .await
        .unwrap()
        .is_empty());
}

async fn if_match_after_overwrite(store: &dyn BlobStore) {
    let first = store
        .put(
            "m/blob",
            Bytes::from_static(b"version one"),
            &Metadata::new(),
        )
        .await
        .unwrap();
    let second = store
        .put(
            "m/blob",
            Bytes::from_static(b"version two!"),
            &Metadata::new(),
        )
        .await
        .unwrap();
    assert_ne!(first.etag, second.etag);
    let err = store
        .read("m/blob", Some(0..4), &first.etag)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
    assert!(err.to_string().contains("changed"), "{err}");
    let now = store
        .read("m/blob", Some(0..7), &second.etag)
        .await
        .unwrap();
    assert_eq!(&now[..], b"version");
}

async fn missing_blob(store: &dyn BlobStore) {
    let err = store.head("no/such/blob").await.unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err:?}");
}
