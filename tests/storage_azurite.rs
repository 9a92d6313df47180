//! The storage layer against a real Azurite: the shared contract, plus what only the real
//! service shows: paging, odd names, auth failures, an unreachable endpoint.

mod common;

use adlsfs::storage::azure::{AzureConfig, AzureStore};
use adlsfs::storage::credentials::{Credential, Secret, EMULATOR_ACCOUNT, EMULATOR_KEY};
use adlsfs::storage::{
    BlobStore, BlobWrite, BlockId, Metadata, ReadUrlSigner, RetryPolicy, StorageError,
    WriteCondition, MAX_CHECKED_RANGE,
};
use bytes::Bytes;
use common::fixture::Fixture;
use common::proxy::Fault;
use common::with_digest;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::time::{Duration, Instant};

async fn put(store: &AzureStore, name: &str, data: &[u8]) {
    store
        .put(name, Bytes::from(data.to_vec()), &Metadata::new())
        .await
        .unwrap_or_else(|e| panic!("put {name:?}: {e}"));
}

#[test]
fn azure_store_meets_the_storage_contract() {
    let fx = Fixture::start();
    let store = fx.store.as_ref();
    fx.block_on(async {
        common::conformance::run_all(store).await;
    });
}

#[test]
fn azure_store_reads_ranges_with_their_md5() {
    let fx = Fixture::start();
    fx.block_on(common::conformance::range_md5_reads(fx.store.as_ref()));
}

/// What Azurite does with `x-ms-range-get-content-md5: true` where
/// [`BlobStore::read_range_md5`] refuses to go (Azure answers 400 there): past 4 MiB
/// served it answers 206 with the whole body and silently no `Content-MD5`; the limit is
/// on the bytes served, not asked for; a range covering the whole blob gets the blob's
/// Content-MD5 whatever its size. Plain reqwest with a SAS URL, no adlsfs code in between.
#[test]
fn azurite_omits_the_range_md5_past_4_mib_served() {
    let fx = Fixture::start();
    let data = common::pattern(6 << 20, 13);
    let len = data.len() as u64;
    fx.put_raw("big", &data);
    let url = fx
        .block_on(fx.store.read_url("big", Duration::from_secs(600)))
        .unwrap();
    let client = reqwest::Client::new();
    let get = |first: u64, last: u64| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .get(url)
                .header("x-ms-version", "2023-11-03")
                .header("x-ms-range", format!("bytes={first}-{last}"))
                .header("x-ms-range-get-content-md5", "true")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let md5 = response
                .headers()
                .get("content-md5")
                .map(|v| adlsfs::digest::Md5Digest::from_base64(v.to_str().unwrap()).unwrap());
            (status, md5, response.bytes().await.unwrap())
        }
    };
    let md5_of = |a: u64, b: u64| adlsfs::digest::md5(&data[a as usize..b as usize]);
    fx.block_on(async {
        let max = MAX_CHECKED_RANGE;
        let (status, md5, body) = get(0, max - 1).await;
        assert_eq!((status, body.len() as u64), (206, max));
        assert_eq!(md5, Some(md5_of(0, max)), "4 MiB: the range's MD5");
        for last in [max, len - 2] {
            let (status, md5, body) = get(0, last).await;
            assert_eq!((status, body.len() as u64), (206, last + 1), "0-{last}");
            assert_eq!(md5, None, "0-{last}: no header, no error");
        }
        let (status, md5, body) = get(len - 100, len + (8 << 20)).await;
        assert_eq!((status, body.len()), (206, 100));
        assert_eq!(md5, Some(md5_of(len - 100, len)), "100 bytes served");
        let (status, md5, body) = get(0, len - 1).await;
        assert_eq!((status, body.len() as u64), (206, len));
        assert_eq!(md5, Some(md5_of(0, len)), "the whole blob: its Content-MD5");
    });
}

/// The point of the range MD5 on plain HTTP: a byte flipped in transit, headers intact,
/// leaves an MD5 that no longer matches the bytes.
#[test]
fn a_byte_flipped_in_transit_no_longer_matches_the_range_md5() {
    let fx = Fixture::builder().proxy().start();
    let (store, proxy) = (fx.proxied_store(), fx.proxy());
    let data = common::pattern(1 << 20, 17);
    let meta = fx.put("flip.bin", &data);
    let range = 1000..(1 << 20) - 1000;
    let want = &data[range.start as usize..range.end as usize];
    fx.block_on(async {
        proxy.add("GET", "/flip.bin", true, Fault::FlipByte, 1);
        let got = store
            .read_range_md5("flip.bin", range.clone(), &meta.etag)
            .await
            .unwrap();
        assert_eq!(proxy.count("/flip.bin"), 1, "one GET, nothing seen amiss");
        assert_eq!(got.data.len(), want.len());
        assert!(got.data != want, "the proxy flipped a byte");
        assert_eq!(
            got.md5,
            Some(adlsfs::digest::md5(want)),
            "the header is intact"
        );
        assert_ne!(got.md5, Some(adlsfs::digest::md5(&got.data)));

        let clean = store
            .read_range_md5("flip.bin", range.clone(), &meta.etag)
            .await
            .unwrap();
        assert!(clean.data == want);
        assert_eq!(clean.md5, Some(adlsfs::digest::md5(&clean.data)));
    });
}

/// A body cut short or a 503 is retried, body included, like every other call.
#[test]
fn range_md5_reads_retry_broken_bodies_and_busy_answers() {
    let fx = Fixture::builder().proxy().start();
    let (store, proxy) = (fx.proxied_store(), fx.proxy());
    let data = common::pattern(2 << 20, 19);
    let meta = fx.put("cut.bin", &data);
    fx.block_on(async {
        proxy.add("GET", "/cut.bin", true, Fault::CutShort, 1);
        proxy.add("GET", "/cut.bin", true, Fault::ResetMidBody, 1);
        proxy.add("GET", "/cut.bin", true, Fault::Status(503, Some(0)), 1);
        let got = store
            .read_range_md5("cut.bin", 0..data.len() as u64, &meta.etag)
            .await
            .unwrap();
        assert_eq!(proxy.count("/cut.bin"), 4, "three faults, then the answer");
        assert!(got.data == data);
        assert_eq!(got.md5, Some(adlsfs::digest::md5(&data)));

        // A body shorter than the range, every time (asking past the end): retried until
        // the budget, then the transient ShortBody that `read` gives.
        let impatient = AzureStore::new(AzureConfig {
            account: EMULATOR_ACCOUNT.into(),
            container: fx.container.clone(),
            endpoint: fx.azurite.endpoint(),
            credential: Credential::AccountKey(Secret::new(EMULATOR_KEY)),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                ..RetryPolicy::with_budget(Duration::from_millis(300))
            },
        })
        .unwrap();
        let size = data.len() as u64;
        let err = impatient
            .read_range_md5("cut.bin", size - 10..size + 10, &meta.etag)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::Service { status: 206, code, .. } if code == "ShortBody"),
            "{err:?}"
        );
        assert!(err.is_transient());
    });
}

#[test]
fn listing_pages_through_more_than_5000_blobs_in_one_directory() {
    let fx = Fixture::start();
    let store = fx.store.as_ref();
    fx.block_on(async {
        let names: Vec<String> = (0..5_003).map(|i| format!("big/dir/f{i:05}")).collect();
        let empty = Metadata::new();
        stream::iter(names.iter())
            .map(|name| store.put(name, Bytes::from_static(b"x"), &empty))
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        put(store, "big/dir/nested/deep/leaf", b"y").await;
        put(store, "big/dir/other/leaf", b"z").await;

        let listing = store.list_dir("big/dir/").await.unwrap();
        let mut listed: Vec<_> = listing.files.iter().map(|f| f.name.clone()).collect();
        listed.sort();
        assert_eq!(listed, names, "every blob across pages, exactly once");
        assert_eq!(listing.dirs, ["big/dir/nested/", "big/dir/other/"]);
        assert_eq!(store.list_dir("big/").await.unwrap().dirs, ["big/dir/"]);
        let nested = store.list_dir("big/dir/nested/").await.unwrap();
        assert!(nested.files.is_empty());
        assert_eq!(nested.dirs, ["big/dir/nested/deep/"]);
    });
}

#[test]
fn names_with_spaces_unicode_and_url_special_characters() {
    let fx = Fixture::start();
    let store = fx.store.as_ref();
    fx.block_on(async {
        let names = [
            "odd/with space.txt",
            "odd/ünïcödé-日本語.txt",
            "odd/100%.txt",
            "odd/hash#tag",
            "odd/question?.txt",
            "odd/plus+sign",
            "odd/amp&eq=semi;",
            "odd/dir with space/inner",
        ];
        for (i, name) in names.iter().enumerate() {
            put(store, name, format!("content {i}").as_bytes()).await;
        }
        let listing = store.list_dir("odd/").await.unwrap();
        let mut files: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        files.sort();
        let mut expected: Vec<_> = names[..7].to_vec();
        expected.sort();
        assert_eq!(files, expected);
        assert_eq!(listing.dirs, ["odd/dir with space/"]);
        for (i, name) in names.iter().enumerate() {
            let head = store
                .head(name)
                .await
                .unwrap_or_else(|e| panic!("head {name:?}: {e}"));
            assert_eq!(head.name, *name);
            let data = store
                .read(name, Some(0..head.size), &head.etag)
                .await
                .unwrap();
            assert_eq!(data, format!("content {i}").as_bytes(), "{name:?}");
        }
    });
}

#[test]
fn a_blob_with_an_empty_segment_does_not_hide_its_directory() {
    let fx = Fixture::start();
    let store = fx.store.as_ref();
    fx.block_on(async {
        put(store, "dir/ok.txt", b"fine").await;
        put(store, "dir//x", b"odd").await;
        put(store, "dir/sub/y", b"y").await;
        let listing = store.list_dir("dir/").await.unwrap();
        let files: Vec<_> = listing.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(files, ["dir/ok.txt"]);
        assert_eq!(listing.dirs, ["dir//", "dir/sub/"]);
        let odd = store.list_dir("dir//").await.unwrap();
        assert_eq!(odd.files[0].name, "dir//x");
    });
}

#[test]
fn wrong_account_key_is_a_clear_auth_error() {
    let fx = Fixture::start();
    let wrong_key = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IHdyb25nIGtleQ==";
    let store = fx.store_with(Credential::AccountKey(Secret::new(wrong_key)));
    fx.block_on(async {
        let err = store.list_dir("").await.unwrap_err();
        assert!(
            matches!(err, StorageError::Auth { status: 403, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("refused") && text.contains("AZURE_STORAGE_ACCOUNT_KEY"),
            "{text}"
        );
        assert!(
            !text.contains(wrong_key),
            "the key must never be printed: {text}"
        );
        let err = store.head("anything").await.unwrap_err();
        assert!(matches!(err, StorageError::Auth { .. }), "{err:?}");
        let err = store
            .read_range_md5("anything", 0..1, "\"0x1\"")
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Auth { .. }), "{err:?}");
    });
}

#[test]
fn missing_container_is_named() {
    let fx = Fixture::builder().no_container().start();
    let err = fx.block_on(fx.store.list_dir("")).unwrap_err();
    assert!(
        matches!(err, StorageError::ContainerNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&fx.container), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_fails_within_the_retry_budget() {
    // A port nobody listens on: connections are refused at once, retried until the budget.
    let port = common::free_port();
    let endpoint = url::Url::parse(&format!("http://127.0.0.1:{port}/{EMULATOR_ACCOUNT}")).unwrap();
    let store = AzureStore::new(AzureConfig {
        account: EMULATOR_ACCOUNT.into(),
        container: "box".into(),
        endpoint: endpoint.clone(),
        credential: Credential::Anonymous,
        retry: RetryPolicy::with_budget(Duration::from_secs(2)),
    })
    .unwrap();
    let start = Instant::now();
    let err = store.list_dir("").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    match &err {
        StorageError::Unreachable { attempts, .. } => assert!(*attempts > 1, "{err}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    let start = Instant::now();
    let err = store.read("x", Some(0..1), "\"etag\"").await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
}

#[test]
fn large_upload_streams_in_blocks_and_reads_back() {
    let fx = Fixture::start();
    let store = fx.store.as_ref();
    fx.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data = common::pattern(20 << 20, 3);
        std::fs::write(&path, &data).unwrap();
        let meta = adlsfs::commands::upload::upload_file(store, &path, "up/big")
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.xxh3().unwrap(), Some(adlsfs::digest::xxh3_128(&data)));
        let tail = store
            .read("up/big", Some(meta.size - 100..meta.size), &meta.etag)
            .await
            .unwrap();
        assert_eq!(&tail[..], &data[data.len() - 100..]);
    });
}

#[test]
fn writes_send_no_head_and_large_files_go_up_in_blocks() {
    let fx = Fixture::builder().proxy().start();
    let (store, proxy) = (fx.proxied_store(), fx.proxy());
    fx.block_on(async {
        let small = store
            .put("n/small", Bytes::from_static(b"small"), &Metadata::new())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data = common::pattern(20 << 20, 5);
        std::fs::write(&path, &data).unwrap();
        let big = store
            .put_file_if(
                &BlobWrite::new("n/big", &with_digest(&data), WriteCondition::IfNoneMatch),
                &path,
            )
            .await
            .unwrap();
        assert_eq!(proxy.count("HEAD "), 0, "{:?}", proxy.seen.lock().unwrap());
        assert_eq!(proxy.count("?comp=block&blockid="), 3, "8 + 8 + 4 MiB");
        assert_eq!(proxy.count("?comp=blocklist"), 1);
        assert_eq!(store.head("n/small").await.unwrap(), small);
        assert_eq!(store.head("n/big").await.unwrap(), big);
        let got = store.read("n/big", None, &big.etag).await.unwrap();
        assert!(got == data, "the blob is the file");
    });
}

#[test]
fn a_conditional_write_whose_answer_was_lost_is_recognised_on_retry() {
    let fx = Fixture::builder().proxy().start();
    let (store, proxy) = (fx.proxied_store(), fx.proxy());
    fx.block_on(async {
        let request = format!("PUT /{EMULATOR_ACCOUNT}/{}/w/landed", fx.container);

        // Put Blob with If-None-Match: the retry meets the blob its first attempt created.
        proxy.add("PUT", "/w/landed", false, Fault::DropAnswer, 1);
        let data = b"landed";
        let created = store
            .put_if(
                &BlobWrite::new("w/landed", &with_digest(data), WriteCondition::IfNoneMatch),
                Bytes::from_static(data),
            )
            .await
            .unwrap();
        assert_eq!(proxy.count(&request), 2, "the write was retried");
        assert_eq!(store.head("w/landed").await.unwrap(), created);

        // Put Block List with If-Match: the retry meets the version its first attempt made.
        let new = b"new content";
        let block = store
            .put_block("w/landed", BlockId::from_index(0), Bytes::from_static(new))
            .await
            .unwrap();
        proxy.add("PUT", "comp=blocklist", false, Fault::DropAnswer, 1);
        let replaced = store
            .put_block_list(
                &BlobWrite::new(
                    "w/landed",
                    &with_digest(new),
                    WriteCondition::IfMatch(created.etag.clone()),
                ),
                &[block],
            )
            .await
            .unwrap();
        assert_eq!(proxy.count("comp=blocklist"), 2, "the commit was retried");
        assert_ne!(replaced.etag, created.etag);
        assert_eq!(store.head("w/landed").await.unwrap(), replaced);
        let got = store.read("w/landed", None, &replaced.etag).await.unwrap();
        assert_eq!(&got[..], new);
    });
}

#[test]
fn a_retried_write_that_meets_another_writers_blob_fails() {
    let fx = Fixture::builder().proxy().start();
    let (store, proxy) = (fx.proxied_store(), fx.proxy());
    fx.block_on(async {
        let theirs = fx
            .store
            .put(
                "w/theirs",
                Bytes::from_static(b"theirs"),
                &with_digest(b"theirs"),
            )
            .await
            .unwrap();
        proxy.add("PUT", "/w/theirs", false, Fault::DropAnswer, 1);
        let err = store
            .put_if(
                &BlobWrite::new(
                    "w/theirs",
                    &with_digest(b"ours"),
                    WriteCondition::IfNoneMatch,
                ),
                Bytes::from_static(b"ours"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(
            proxy.count("/w/theirs"),
            3,
            "two PUTs, then the HEAD that checked"
        );
        assert_eq!(fx.store.head("w/theirs").await.unwrap(), theirs);

        // Without a digest in the metadata a block commit can't be recognised as our own:
        // the retry reports the condition's failure, though the commit landed.
        let block = store
            .put_block(
                "w/bare",
                BlockId::from_index(0),
                Bytes::from_static(b"bare"),
            )
            .await
            .unwrap();
        proxy.add("PUT", "comp=blocklist", false, Fault::DropAnswer, 1);
        let err = store
            .put_block_list(
                &BlobWrite::new("w/bare", &Metadata::new(), WriteCondition::IfNoneMatch),
                &[block],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(fx.store.head("w/bare").await.unwrap().size, 4);
    });
}
