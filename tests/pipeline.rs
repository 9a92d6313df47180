//! The materialisation pipeline (`adlsfs::materialise::Materialiser`) alone, over the
//! in-memory store behind `FaultyStore`: no Azurite, no FUSE. Its concurrency and failure
//! properties, each stated with exact counts (GETs and bytes the store served, metrics by
//! kind, files in the cache's `tmp/` and `v1/`): N requests make one fetch; a failed fetch
//! leaves nothing and the next request tries afresh; a cut stream resumes where it
//! stopped; an open entry survives eviction.

mod common;

use adlsfs::cache::CachedFile;
use adlsfs::digest::xxh3_128;
use adlsfs::error::{Classify, ErrorKind};
use adlsfs::materialise::MaterialiseError;
use adlsfs::storage::faulty::{Damage, Fault, Op, ALWAYS};
use adlsfs::storage::BlobMeta;
use common::pattern;
use common::pipeline::{Counts, Rig, CHUNK};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Eleven ranges, the last one short.
const SIZE: u64 = 10 * CHUNK + 123;
const RANGES: u64 = 11;

/// What one clean download of a `SIZE`-byte blob adds to the counts.
fn one_fetch() -> Counts {
    Counts {
        reads: RANGES,
        bytes_read: SIZE,
        misses: 1,
        native_fetches: 1,
        native_bytes: SIZE,
        ..Counts::default()
    }
}

/// A rig with one `SIZE`-byte blob `f` carrying its digest.
async fn rig_with_blob(rig: Rig) -> (Rig, BlobMeta, Vec<u8>) {
    let data = pattern(SIZE as usize, 1);
    let meta = rig.put("dir/f.bin", &data).await;
    (rig, meta, data)
}

/// What a request refused before its first GET adds to the counts.
fn failed_before_any_get(kind: ErrorKind) -> Counts {
    Counts {
        misses: 1,
        failures: vec![(kind, 1)],
        ..Counts::default()
    }
}

/// A request for `meta` fails with `kind` and leaves nothing: no temporary, no entry.
async fn fails_leaving_nothing(rig: &Rig, meta: &BlobMeta, kind: ErrorKind) -> MaterialiseError {
    let err = rig.pipeline.ensure(&rig.key(meta), meta).await.unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    rig.assert_left_nothing();
    err
}

/// The next request for `meta` downloads it afresh, whole, once, into one entry.
async fn next_request_succeeds(rig: &Rig, meta: &BlobMeta, data: &[u8], before: Counts) {
    let cached = rig.pipeline.ensure(&rig.key(meta), meta).await.unwrap();
    assert!(std::fs::read(&cached.path).unwrap() == data, "bytes differ");
    assert_eq!(rig.entries(), [cached.path]);
    assert!(rig.temporaries().is_empty());
    let fetch = one_fetch();
    assert_eq!(
        rig.counts(),
        Counts {
            reads: before.reads + fetch.reads,
            bytes_read: before.bytes_read + fetch.bytes_read,
            misses: before.misses + 1,
            native_fetches: 1,
            native_bytes: SIZE,
            ..before
        },
        "no negative cache: one more, complete download"
    );
}

fn read_whole(mut file: &std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ensures_and_opens_of_one_entry_fetch_it_once() {
    const N: usize = 16;
    let (rig, meta, data) = rig_with_blob(Rig::builder().build()).await;
    // Slow GETs: every request arrives while the one download is under way.
    rig.store.delay(Op::Read, Duration::from_millis(100));
    let rig = Arc::new(rig);
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (rig, barrier, meta) = (Arc::clone(&rig), Arc::clone(&barrier), meta.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let key = rig.key(&meta);
                if i % 2 == 0 {
                    let held = rig.pipeline.open(&key, &meta).await.unwrap();
                    (held.cached, Some(read_whole(&held.file)))
                } else {
                    (rig.pipeline.ensure(&key, &meta).await.unwrap(), None)
                }
            })
        })
        .collect();
    let mut got: Vec<(CachedFile, Option<Vec<u8>>)> = Vec::new();
    for task in tasks {
        got.push(task.await.unwrap());
    }

    let entry = rig.entries();
    assert_eq!(entry.len(), 1, "{entry:?}");
    let ino = std::fs::metadata(&entry[0]).unwrap().ino();
    for (cached, read) in &got {
        assert_eq!(cached.path, entry[0]);
        assert_eq!(std::fs::metadata(&cached.path).unwrap().ino(), ino);
        assert_eq!(cached.xxh3, Some(xxh3_128(&data)), "verified");
        if let Some(read) = read {
            assert!(*read == data, "an open read other bytes");
        }
    }
    let fetched = got.iter().filter(|(c, _)| c.fetched).count();
    assert_eq!(
        fetched, 1,
        "one request downloaded, the others found its file"
    );
    assert_eq!(got.iter().filter(|(_, r)| r.is_some()).count(), N / 2);
    assert_eq!(
        rig.counts(),
        Counts {
            misses: N as u64,
            ..one_fetch()
        },
        "{N} requests, one download: the bytes once, not {N} times"
    );
    assert!(rig.temporaries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byte_flipped_in_transit_is_downloaded_again_and_never_served() {
    let (rig, meta, data) = rig_with_blob(Rig::builder().build()).await;
    // Every GET of the first download; only the one covering the byte is changed.
    rig.store
        .damage_reads(RANGES as usize, Damage::FlipByte(SIZE / 2));
    let cached = rig.pipeline.ensure(&rig.key(&meta), &meta).await.unwrap();
    assert!(
        std::fs::read(&cached.path).unwrap() == data,
        "the right bytes"
    );
    assert_eq!(cached.xxh3, Some(xxh3_128(&data)));
    assert_eq!(
        rig.counts(),
        Counts {
            reads: 2 * RANGES,
            bytes_read: 2 * SIZE,
            verification_failures: 1,
            ..one_fetch()
        },
        "one failed check, one more download, no failure"
    );
    assert_eq!(rig.entries(), [cached.path]);
    assert!(rig.temporaries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_recorded_digest_fails_after_a_second_download_and_leaves_nothing() {
    let rig = Rig::builder().build();
    let data = pattern(SIZE as usize, 1);
    let meta = rig.put_claiming("dir/f.bin", &data, b"other bytes").await;
    let err = fails_leaving_nothing(&rig, &meta, ErrorKind::Corrupt).await;
    assert!(err.to_string().contains("xxh3_128 mismatch"), "{err}");
    let failed = Counts {
        reads: 2 * RANGES,
        bytes_read: 2 * SIZE,
        verification_failures: 2,
        ..failed_before_any_get(ErrorKind::Corrupt)
    };
    assert_eq!(rig.counts(), failed, "two downloads, both refused");
    // No negative cache: the next request tries (twice) again.
    fails_leaving_nothing(&rig, &meta, ErrorKind::Corrupt).await;
    assert_eq!(rig.counts().reads, 4 * RANGES);
}

/// A GET refused with `fault` fails the download with `kind` at once (one range at a
/// time, so exactly one GET), leaves nothing, and the next request succeeds.
async fn a_refused_read(fault: Fault, kind: ErrorKind) {
    let (rig, meta, data) = rig_with_blob(Rig::builder().parallelism(1).build()).await;
    rig.store.fail(Op::Read, 1, fault);
    fails_leaving_nothing(&rig, &meta, kind).await;
    let failed = Counts {
        reads: 1,
        ..failed_before_any_get(kind)
    };
    assert_eq!(rig.counts(), failed, "not retried, nothing else fetched");
    next_request_succeeds(&rig, &meta, &data, failed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_changed_mid_fetch_fails_as_changed_and_leaves_nothing() {
    a_refused_read(Fault::Changed, ErrorKind::Changed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_gone_mid_fetch_fails_as_not_found_and_leaves_nothing() {
    a_refused_read(Fault::NotFound, ErrorKind::NotFound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auth_refusal_fails_as_auth_and_leaves_nothing() {
    a_refused_read(Fault::Auth, ErrorKind::Auth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_fault_outlasting_the_retry_budget_fails_as_transient() {
    let budget = Duration::from_millis(300);
    let rig = Rig::builder().parallelism(1).retry_budget(budget).build();
    let (rig, meta, data) = rig_with_blob(rig).await;
    rig.store.fail(Op::Read, ALWAYS, Fault::Transient);
    let started = Instant::now();
    fails_leaving_nothing(&rig, &meta, ErrorKind::Transient).await;
    let elapsed = started.elapsed();
    assert!(elapsed < budget * 10, "gave up after {elapsed:?}");
    let attempts = rig.counts().reads;
    assert!(attempts > 1, "the first range was retried: {attempts} GETs");
    let failed = Counts {
        reads: attempts,
        ..failed_before_any_get(ErrorKind::Transient)
    };
    assert_eq!(rig.counts(), failed);
    rig.store.heal(Op::Read);
    next_request_succeeds(&rig, &meta, &data, failed).await;
}

/// The first `times` GETs are damaged by `damage` mid-range; each such range is asked
/// again for its rest only, so every byte is served once and the file is right.
async fn resumes_after(times: usize, damage: Damage) {
    let (rig, meta, data) = rig_with_blob(Rig::builder().build()).await;
    rig.store.damage_reads(times, damage);
    let cached = rig.pipeline.ensure(&rig.key(&meta), &meta).await.unwrap();
    assert!(std::fs::read(&cached.path).unwrap() == data, "bytes differ");
    assert_eq!(
        rig.counts(),
        Counts {
            reads: RANGES + times as u64,
            ..one_fetch()
        },
        "resumed, not restarted: bytes served == file size"
    );
    assert!(rig.temporaries().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_cut_mid_range_resume_from_the_first_byte_not_written() {
    // Four GETs break (a transient error) after 1000 bytes of their range.
    resumes_after(4, Damage::CutAfter(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_ending_short_mid_range_resumes_like_a_cut_one() {
    // The body ends cleanly after 1000 bytes: the range is short, not broken.
    resumes_after(1, Damage::Truncate(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_with_no_digest_is_length_checked_or_refused_before_any_download() {
    let data = pattern(SIZE as usize, 2);

    let lenient = Rig::builder().build();
    let meta = lenient.put_bare("bare", &data).await;
    let cached = lenient
        .pipeline
        .ensure(&lenient.key(&meta), &meta)
        .await
        .unwrap();
    assert!(std::fs::read(&cached.path).unwrap() == data);
    assert_eq!(cached.xxh3, Some(xxh3_128(&data)), "hashed while fetched");
    assert_eq!(lenient.counts(), one_fetch());

    let strict = Rig::builder().require_digest().build();
    let meta = strict.put_bare("bare", &data).await;
    let err = fails_leaving_nothing(&strict, &meta, ErrorKind::Unverifiable).await;
    assert!(err.to_string().contains("--require-digest"), "{err}");
    assert_eq!(
        strict.counts(),
        failed_before_any_get(ErrorKind::Unverifiable),
        "refused from its metadata: nothing downloaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_downloads_fails_a_slow_open_as_cancelled_and_leaves_nothing() {
    let (rig, meta, _) = rig_with_blob(Rig::builder().parallelism(1).build()).await;
    rig.store.delay(Op::Read, Duration::from_secs(60));
    let rig = Arc::new(rig);
    let open = {
        let (rig, meta) = (Arc::clone(&rig), meta.clone());
        tokio::spawn(async move { rig.pipeline.open(&rig.key(&meta), &meta).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.store.calls(Op::Read) == 0 {
        assert!(Instant::now() < deadline, "the download never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.pipeline.in_flight(), 1);
    let cancelled = Instant::now();
    rig.pipeline.cancel_downloads();
    let err = open.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(
        cancelled.elapsed() < Duration::from_secs(5),
        "not abandoned"
    );
    rig.assert_left_nothing();
    assert_eq!(
        rig.counts(),
        Counts {
            reads: 1,
            misses: 1,
            failures: vec![(ErrorKind::Cancelled, 1)],
            ..Counts::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_hit_counts_a_hit_and_reads_nothing_from_the_store() {
    let (rig, meta, data) = rig_with_blob(Rig::builder().build()).await;
    let key = rig.key(&meta);
    let first = rig.pipeline.ensure(&key, &meta).await.unwrap();
    assert!(first.fetched);
    let held = rig.pipeline.open(&key, &meta).await.unwrap();
    let again = rig.pipeline.ensure(&key, &meta).await.unwrap();
    for hit in [&held.cached, &again] {
        assert_eq!((&hit.path, hit.fetched), (&first.path, false));
        assert_eq!(hit.xxh3, Some(xxh3_128(&data)), "the recorded digest");
    }
    assert!(read_whole(&held.file) == data);
    assert_eq!(
        rig.counts(),
        Counts {
            hits: 2,
            ..one_fetch()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_larger_than_the_cache_bound_is_no_space_and_fetches_nothing() {
    let rig = Rig::builder().max_bytes(SIZE - 1).build();
    let (rig, meta, _) = rig_with_blob(rig).await;
    let err = fails_leaving_nothing(&rig, &meta, ErrorKind::NoSpace).await;
    assert!(
        err.to_string().contains("larger than the whole cache"),
        "{err}"
    );
    assert_eq!(rig.counts(), failed_before_any_get(ErrorKind::NoSpace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_skips_an_entry_held_open_and_it_still_reads_whole() {
    // Room for one entry, not two.
    let rig = Rig::builder().max_bytes(SIZE * 3 / 2).build();
    let (rig, a_meta, a_data) = rig_with_blob(rig).await;
    let b_data = pattern(SIZE as usize, 3);
    let b_meta = rig.put("dir/b.bin", &b_data).await;

    let a = rig.pipeline.open(&rig.key(&a_meta), &a_meta).await.unwrap();
    // The least recently used entry: eviction would take it first.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&a.cached.path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(an_hour_ago))
        .unwrap();
    // Making room for b finds only a, held: b is fetched over the bound.
    let b = rig
        .pipeline
        .ensure(&rig.key(&b_meta), &b_meta)
        .await
        .unwrap();
    assert_eq!(rig.entries().len(), 2);
    assert_eq!(rig.counts().evictions, 0, "a held entry was evicted");

    let evicted = rig.cache.evict_for_reserved().await.unwrap();
    assert_eq!(
        (evicted.files, evicted.skipped_in_use),
        (1, 1),
        "{evicted:?}"
    );
    assert_eq!(
        rig.entries(),
        std::slice::from_ref(&a.cached.path),
        "b went, a stayed"
    );
    assert!(!b.path.exists());
    assert!(read_whole(&a.file) == a_data, "the held entry reads whole");
    let two = one_fetch();
    assert_eq!(
        rig.counts(),
        Counts {
            reads: 2 * two.reads,
            bytes_read: 2 * two.bytes_read,
            misses: 2,
            native_fetches: 2,
            native_bytes: 2 * SIZE,
            evictions: 1,
            ..Counts::default()
        }
    );
}
