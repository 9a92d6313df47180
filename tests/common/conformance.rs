//! The storage contract, run against every `BlobStore` (the in-memory fake and Azurite),
//! so the fake used by fast tests behaves like the service where adlsfs depends on it.

use adlsfs::digest::{self, XXH3_METADATA_KEY};
use adlsfs::storage::{
    BlobMeta, BlobStore, BlobWrite, BlockId, Metadata, StagedBlock, StorageError, WriteCondition,
    MAX_CHECKED_RANGE,
};
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

pub async fn run_all(store: &dyn BlobStore) {
    nested_listing(store).await;
    head_metadata_and_md5(store).await;
    ranged_reads(store).await;
    if_match_after_overwrite(store).await;
    missing_blob(store).await;
    if_none_match_creates_only(store).await;
    if_match_replaces_only_that_version(store).await;
    block_upload_commits_the_concatenation_with_metadata(store).await;
    block_commit_conditions_and_unknown_ids(store).await;
    empty_block_list_commits_an_empty_blob(store).await;
}

/// What a write returned is what a HEAD then reports: no HEAD is needed after a write.
async fn assert_is_current(store: &dyn BlobStore, written: &BlobMeta) {
    let head = store.head(&written.name).await.unwrap();
    assert_eq!(&head, written, "the write's answer against a HEAD");
}

async fn assert_content(store: &dyn BlobStore, name: &str, data: &[u8]) {
    let head = store.head(name).await.unwrap();
    let got = store.read(name, None, &head.etag).await.unwrap();
    assert_eq!(&got[..], data, "content of {name}");
}

async fn if_none_match_creates_only(store: &dyn BlobStore) {
    let name = "w/created";
    let created = store
        .put_if(
            &BlobWrite::new(
                name,
                &meta_with_digest(b"first"),
                WriteCondition::IfNoneMatch,
            ),
            Bytes::from_static(b"first"),
        )
        .await
        .unwrap();
    assert_eq!(created.size, 5);
    assert_eq!(created.metadata, meta_with_digest(b"first"));
    assert_eq!(created.content_md5, Some(digest::md5(b"first")));
    assert_is_current(store, &created).await;
    let err = store
        .put_if(
            &BlobWrite::new(name, &Metadata::new(), WriteCondition::IfNoneMatch),
            Bytes::from_static(b"second"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(name), "{err}");
    assert_is_current(store, &created).await;
    assert_content(store, name, b"first").await;
}

async fn if_match_replaces_only_that_version(store: &dyn BlobStore) {
    let name = "w/replaced";
    let first = store
        .put(name, Bytes::from_static(b"one"), &Metadata::new())
        .await
        .unwrap();
    let meta = Metadata::from([("who".to_string(), "second".to_string())]);
    let second = store
        .put_if(
            &BlobWrite::new(name, &meta, WriteCondition::IfMatch(first.etag.clone())),
            Bytes::from_static(b"two!"),
        )
        .await
        .unwrap();
    assert_ne!(second.etag, first.etag);
    assert_eq!((second.size, &second.metadata), (4, &meta));
    assert_is_current(store, &second).await;
    let stale = WriteCondition::IfMatch(first.etag.clone());
    let err = store
        .put_if(
            &BlobWrite::new(name, &meta, stale.clone()),
            Bytes::from_static(b"three"),
        )
        .await
        .unwrap_err();
    match &err {
        StorageError::Changed { etag, .. } => assert_eq!(*etag, first.etag),
        other => panic!("expected Changed, got {other:?}"),
    }
    assert_is_current(store, &second).await;
    assert_content(store, name, b"two!").await;
    // If-Match on a blob that does not exist is a changed blob too: nothing is created.
    let err = store
        .put_if(
            &BlobWrite::new("w/never", &meta, stale.clone()),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
    assert!(matches!(
        store.head("w/never").await,
        Err(StorageError::NotFound { .. })
    ));
}

/// Stages `parts` as blocks 0.. of `name`, several at once, and returns them in order.
async fn stage(store: &dyn BlobStore, name: &str, parts: &[Vec<u8>]) -> Vec<StagedBlock> {
    stream::iter(parts.iter().enumerate())
        .map(|(i, part)| {
            store.put_block(
                name,
                BlockId::from_index(i as u64),
                Bytes::from(part.clone()),
            )
        })
        .buffered(3)
        .try_collect()
        .await
        .unwrap()
}

async fn block_upload_commits_the_concatenation_with_metadata(store: &dyn BlobStore) {
    let name = "blocks/whole";
    let parts = [
        super::pattern(300_000, 1),
        super::pattern(1, 2),
        super::pattern(70_001, 3),
    ];
    let whole = parts.concat();
    let blocks = stage(store, name, &parts).await;
    assert_eq!(blocks[2].size, 70_001);
    // Staged blocks are not a blob.
    assert!(matches!(
        store.head(name).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(store.list_dir("blocks/").await.unwrap().files.is_empty());
    let meta = meta_with_digest(&whole);
    let committed = store
        .put_block_list(
            &BlobWrite::new(name, &meta, WriteCondition::IfNoneMatch),
            &blocks,
        )
        .await
        .unwrap();
    assert_eq!(committed.size, whole.len() as u64);
    assert_eq!(committed.metadata, meta);
    assert_eq!(
        committed.content_md5, None,
        "no whole-blob MD5 for a block list"
    );
    assert_is_current(store, &committed).await;
    assert_content(store, name, &whole).await;
    assert_eq!(committed.xxh3().unwrap(), Some(digest::xxh3_128(&whole)));
    let listed = store.list_dir("blocks/").await.unwrap();
    assert_eq!(listed.files, std::slice::from_ref(&committed));
    // Committing the same list again (as a retry would) finds the committed blocks.
    let again = store
        .put_block_list(
            &BlobWrite::new(name, &meta, WriteCondition::Overwrite),
            &blocks,
        )
        .await
        .unwrap();
    assert_ne!(again.etag, committed.etag);
    assert_content(store, name, &whole).await;
}

async fn block_commit_conditions_and_unknown_ids(store: &dyn BlobStore) {
    let name = "blocks/conditional";
    let old = store
        .put(name, Bytes::from_static(b"old"), &Metadata::new())
        .await
        .unwrap();
    let parts = [b"new ".to_vec(), b"content".to_vec()];
    let blocks = stage(store, name, &parts).await;
    // Staging leaves the committed blob as it was.
    assert_is_current(store, &old).await;
    let err = store
        .put_block_list(
            &BlobWrite::new(name, &Metadata::new(), WriteCondition::IfNoneMatch),
            &blocks,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
    let stale = WriteCondition::IfMatch("\"0x8DEADBEEF000000\"".into());
    let err = store
        .put_block_list(
            &BlobWrite::new(name, &Metadata::new(), stale.clone()),
            &blocks,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
    assert_is_current(store, &old).await;
    assert_content(store, name, b"old").await;
    // A failed commit keeps the staged blocks: the right condition then commits them.
    let new = store
        .put_block_list(
            &BlobWrite::new(
                name,
                &Metadata::new(),
                WriteCondition::IfMatch(old.etag.clone()),
            ),
            &blocks,
        )
        .await
        .unwrap();
    assert_is_current(store, &new).await;
    assert_content(store, name, b"new content").await;

    let unknown = StagedBlock {
        id: BlockId::from_index(99),
        size: 1,
    };
    let err = store
        .put_block_list(
            &BlobWrite::new(name, &Metadata::new(), WriteCondition::Overwrite),
            &[unknown],
        )
        .await
        .unwrap_err();
    match &err {
        StorageError::Service { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (400, "InvalidBlockList"))
        }
        other => panic!("expected InvalidBlockList, got {other:?}"),
    }
    assert_content(store, name, b"new content").await;
    // A commit discards the blocks it did not name.
    let staged = stage(store, "blocks/discard", &[b"a".to_vec(), b"b".to_vec()]).await;
    store
        .put_block_list(
            &BlobWrite::new(
                "blocks/discard",
                &Metadata::new(),
                WriteCondition::Overwrite,
            ),
            &staged[..1],
        )
        .await
        .unwrap();
    let err = store
        .put_block_list(
            &BlobWrite::new(
                "blocks/discard",
                &Metadata::new(),
                WriteCondition::Overwrite,
            ),
            &staged[1..],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Service { status: 400, .. }),
        "{err:?}"
    );
    assert_content(store, "blocks/discard", b"a").await;
}

async fn empty_block_list_commits_an_empty_blob(store: &dyn BlobStore) {
    let meta = meta_with_digest(b"");
    let empty = store
        .put_block_list(
            &BlobWrite::new("blocks/empty", &meta, WriteCondition::IfNoneMatch),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(empty.size, 0);
    assert_is_current(store, &empty).await;
    assert!(store
        .read("blocks/empty", None, &empty.etag)
        .await
        .unwrap()
        .is_empty());
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

/// [`BlobStore::read_range_md5`]: the bytes of the range with the MD5 of exactly those
/// bytes, up to [`MAX_CHECKED_RANGE`] at any offset, for a Put Blob and a block list
/// alike; If-Match as for reads; ranges it can't check refused without a request.
pub async fn range_md5_reads(store: &dyn BlobStore) {
    let max = MAX_CHECKED_RANGE;
    assert_eq!(max, 4 << 20);
    let data = super::pattern(10 << 20 | 5, 11);
    let len = data.len() as u64;
    let meta = store
        .put("c/blob", Bytes::from(data.clone()), &Metadata::new())
        .await
        .unwrap();
    for range in [0..max, 3..max + 3, len - max..len, 100..200, len - 1..len] {
        let got = store
            .read_range_md5("c/blob", range.clone(), &meta.etag)
            .await
            .unwrap_or_else(|e| panic!("{range:?}: {e}"));
        let want = &data[range.start as usize..range.end as usize];
        assert!(got.data == want, "the bytes of {range:?}");
        assert_eq!(got.md5, Some(digest::md5(want)), "the MD5 of {range:?}");
    }

    // A block list has no Content-MD5 of its own; its ranges still get theirs.
    let parts = vec![data[..1000].to_vec(), data[1000..3000].to_vec()];
    let blocks = stage(store, "c/blocks", &parts).await;
    let listed = store
        .put_block_list(&BlobWrite::overwrite("c/blocks", &Metadata::new()), &blocks)
        .await
        .unwrap();
    for range in [0..3000, 500..2500] {
        let got = store
            .read_range_md5("c/blocks", range.clone(), &listed.etag)
            .await
            .unwrap();
        let want = &data[range.start as usize..range.end as usize];
        assert!(got.data == want, "the bytes of {range:?}");
        assert_eq!(got.md5, Some(digest::md5(want)), "the MD5 of {range:?}");
    }

    for range in [0..max + 1, 7..7, 0..len] {
        let err = store
            .read_range_md5("c/blob", range.clone(), &meta.etag)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::Client { .. }),
            "{range:?}: {err:?}"
        );
    }

    let newer = store
        .put("c/blob", Bytes::from_static(b"replaced"), &Metadata::new())
        .await
        .unwrap();
    let err = store
        .read_range_md5("c/blob", 0..4, &meta.etag)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
    let got = store
        .read_range_md5("c/blob", 0..4, &newer.etag)
        .await
        .unwrap();
    assert_eq!(&got.data[..], b"repl");
    assert_eq!(got.md5, Some(digest::md5(b"repl")));

    // A missing blob fails as a read of it does: Azurite answers 412 to the If-Match
    // (Changed), the fake 404 (NotFound); both mean the pinned version is gone.
    let err = store
        .read_range_md5("c/missing", 0..4, &meta.etag)
        .await
        .unwrap_err();
    let read_err = store
        .read("c/missing", Some(0..4), &meta.etag)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NotFound { .. } | StorageError::Changed { .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        std::mem::discriminant(&err),
        std::mem::discriminant(&read_err),
        "{err:?} against {read_err:?}"
    );
}
