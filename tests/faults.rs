//! Faults injected for real between adlsfs (or azcopy) and Azurite by a reverse proxy:
//! a reader gets the right bytes or a clear error, never wrong or partial bytes, never a
//! hang, and the mount keeps serving everything else.

mod common;

use adlsfs::metrics::{CACHE_HITS, CACHE_MISSES, FETCHES, FETCH_FAILURES, VERIFICATION_FAILURES};
use adlsfs::storage::BlobStore;
use bytes::Bytes;
use common::fixture::Fixture;
use common::mount::Mount;
use common::proxy::Fault;
use common::{pattern, rt, stderr, with_digest};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn transient_faults_are_retried_and_the_bytes_are_right() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let data = pattern(24 << 20, 61);
    fx.upload("fault.bin", &data);
    let mount = fx.mount(&[
        "--fetcher",
        "native",
        "--native-chunk-size",
        "4M",
        "--read-timeout",
        "1s",
        "--retry-timeout",
        "20s",
    ]);
    for fault in [
        Fault::ResetMidBody,
        Fault::CutShort,
        Fault::Status(503, Some(1)),
        Fault::Status(500, None),
        Fault::Stall,
        Fault::Trickle(Duration::from_millis(2)),
        Fault::DelayFirstByte(Duration::from_millis(300)),
    ] {
        proxy.add("GET", "/fault.bin", true, fault, 1);
    }
    let got = std::fs::read(mount.path().join("fault.bin")).unwrap();
    assert!(got == data, "bytes differ after faults");
    // Six 4 MiB ranges; every faulted one was asked for again (by object_store's request
    // retries or by the fetcher resuming the range).
    let gets = proxy.count(&format!("GET /devstoreaccount1/{}/fault.bin", fx.container));
    assert!(
        gets >= 6 + 7,
        "the faulted ranges were fetched again: {gets} GETs"
    );
}

#[test]
fn in_whole_file_mode_a_byte_flipped_in_transit_is_downloaded_again_and_the_reader_gets_the_right_bytes(
) {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let data = pattern(8 << 20, 62);
    fx.upload("flip.bin", &data);
    let mount = fx.mount(&[
        "--fetcher",
        "native",
        "--native-chunk-size",
        "4M",
        "--native-parallelism",
        "2",
        "--verify-before-read",
    ]);
    // Plain HTTP, headers kept, no range checks without early reads: only the whole-file
    // digest can see it.
    proxy.add("GET", "/flip.bin", true, Fault::FlipByte, 1);
    let got = std::fs::read(mount.path().join("flip.bin")).unwrap();
    assert!(got == data, "a flipped byte reached the reader");
    let metrics = mount.metrics();
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 0.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    let gets = proxy.count(&format!("GET /devstoreaccount1/{}/flip.bin", fx.container));
    assert_eq!(
        gets,
        2 * 2,
        "two 4 MiB ranges, downloaded twice: {gets} GETs"
    );
    assert_eq!(fx.cached().len(), 1);
}

/// Serves `old` as v.bin through a mount reading 1 MiB ranges one at a time, and replaces
/// the blob with `new` just before the second ranged GET.
fn overwritten_before_the_second_range(
    fx: &Fixture,
    old: &[u8],
    new: &[u8],
    args: &[&str],
) -> Mount {
    let proxy = fx.proxy();
    fx.put("v.bin", old);
    let mut all = vec![
        "--fetcher",
        "native",
        "--native-chunk-size",
        "1M",
        "--native-parallelism",
        "1",
        "--metadata-ttl",
        "1s",
    ];
    all.extend_from_slice(args);
    let mount = fx.mount(&all);
    let (s, n) = (Arc::clone(&fx.store), new.to_vec());
    proxy.add(
        "GET",
        "/v.bin",
        true,
        Fault::DelayFirstByte(Duration::ZERO),
        1,
    );
    proxy.add(
        "GET",
        "/v.bin",
        true,
        Fault::Before(Arc::new(move || {
            let (s, n) = (Arc::clone(&s), n.clone());
            std::thread::spawn(move || {
                rt().block_on(s.put("v.bin", Bytes::from(n.clone()), &with_digest(&n)))
                    .unwrap()
            })
            .join()
            .unwrap();
        })),
        1,
    );
    mount
}

#[test]
fn a_blob_overwritten_mid_fetch_never_mixes_versions() {
    let fx = Fixture::builder().proxy().start();
    let (old, new) = (pattern(4 << 20, 62), pattern(4 << 20, 63));
    let mount = overwritten_before_the_second_range(&fx, &old, &new, &["--verify-before-read"]);
    // The download of the old version fails on If-Match; the kernel looks the path up
    // again (ESTALE) and opens the new version: never a mix, never the stale bytes.
    let got = std::fs::read(mount.path().join("v.bin")).unwrap();
    assert!(got == new, "only the new version's bytes");
    let metrics = mount.metrics();
    assert_eq!(
        metrics.failures("changed"),
        1.0,
        "the old version's fetch failed on If-Match: {metrics}"
    );
    assert_eq!(metrics.total(FETCH_FAILURES), 1.0, "{metrics}");
    assert_eq!(
        metrics.fetcher(FETCHES, "native"),
        1.0,
        "one fetch completed: {metrics}"
    );
    let log = mount.log();
    assert!(log.contains("changed on the server"), "{log}");
    assert_eq!(fx.temporaries(), 0);
    let entries = fx.cached();
    assert_eq!(
        entries.len(),
        1,
        "only the new version is cached: {entries:?}"
    );
}

#[test]
fn a_blob_overwritten_while_it_streams_gives_old_bytes_then_eio_and_the_new_version_after_the_ttl()
{
    let fx = Fixture::builder().proxy().start();
    let (old, new) = (pattern(4 << 20, 62), pattern(4 << 20, 63));
    let mount = overwritten_before_the_second_range(&fx, &old, &new, &[]);
    let path = mount.path().join("v.bin");
    // The open returns once the first range confirmed the old version; what is read is
    // the old version's, until the next range meets If-Match and everything fails.
    let mut file = std::fs::File::open(&path).unwrap();
    let mut got = Vec::new();
    let err = file.read_to_end(&mut got).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        got.len() < old.len() && got == old[..got.len()],
        "only old bytes, {} of them",
        got.len()
    );
    // The close after the failure says so too.
    assert_eq!(
        common::close_errno(file),
        libc::EIO,
        "close() reports the failure"
    );
    let metrics = mount.metrics();
    assert_eq!(metrics.failures("changed"), 1.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "native"), 0.0, "{metrics}");
    // After the TTL the listing shows the new version, a new inode, a new download.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        std::fs::read(&path).unwrap() == new,
        "the new version after the TTL"
    );
    mount.settled_metrics();
    assert_eq!(fx.temporaries(), 0);
    assert_eq!(fx.cached().len(), 1, "only the new version is cached");
}

#[test]
fn a_spent_retry_budget_is_eio_and_the_next_open_tries_afresh() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let data = pattern(2 << 20, 64);
    fx.put("down.bin", &data);
    let mount = fx.mount(&["--fetcher", "native", "--retry-timeout", "2s"]);
    proxy.add("GET", "/down.bin", true, Fault::Status(500, None), 10_000);
    let start = Instant::now();
    let err = std::fs::read(mount.path().join("down.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    let metrics = mount.metrics();
    assert_eq!(metrics.failures("transient"), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 1.0, "{metrics}");
    // The log line names the blob.
    let log = mount.log();
    assert!(
        log.lines()
            .any(|l| l.contains("down.bin") && l.contains("could not materialise")),
        "{log}"
    );
    assert_eq!(fx.temporaries(), 0);
    proxy.clear();
    assert!(
        std::fs::read(mount.path().join("down.bin")).unwrap() == data,
        "no poisoned negative cache"
    );
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.get(CACHE_MISSES), 2.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
}

#[test]
fn the_mount_stays_responsive_while_one_blob_server_stalls() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    fx.put("cached.txt", b"fast");
    fx.put("stuck.bin", &pattern(1 << 20, 65));
    for i in 0..10 {
        fx.put(&format!("other/f{i}"), b"x");
    }
    let mount = fx.mount(&[
        "--fetcher",
        "native",
        "--read-timeout",
        "2s",
        "--retry-timeout",
        "5s",
    ]);
    assert_eq!(
        std::fs::read(mount.path().join("cached.txt")).unwrap(),
        b"fast"
    );
    proxy.add("GET", "/stuck.bin", true, Fault::Stall, 10_000);
    let stuck = mount.path().join("stuck.bin");
    let reader = std::thread::spawn(move || std::fs::read(stuck));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(
        std::fs::read_dir(mount.path().join("other"))
            .unwrap()
            .count(),
        10
    );
    assert_eq!(
        std::fs::read(mount.path().join("cached.txt")).unwrap(),
        b"fast"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?} beside a stalled download",
        start.elapsed()
    );
    assert!(!reader.is_finished());
    let result = reader.join().unwrap();
    assert_eq!(
        result.unwrap_err().raw_os_error(),
        Some(libc::EIO),
        "a stall ends in EIO, not a hang"
    );
}

#[test]
fn a_stalled_azcopy_is_killed_and_the_file_is_fetched_natively() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let data = pattern(24 << 20, 66);
    fx.upload("az.bin", &data);
    let mount = fx.mount(&[
        "--fetcher",
        "azcopy",
        "--azcopy-min-size",
        "1M",
        "--azcopy-stall-timeout",
        "3s",
    ]);
    // azcopy's requests carry its SAS in the query; the native fetcher's do not.
    proxy.add("GET", "/az.bin?", true, Fault::Stall, 10_000);
    let got = std::fs::read(mount.path().join("az.bin")).unwrap();
    assert!(got == data);
    let log = mount.log();
    assert!(
        log.contains("no progress") && log.contains("falling back to the native fetcher"),
        "{log}"
    );
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "azcopy"), 0.0, "{metrics}");
    assert!(proxy.count("/az.bin?") > 0, "azcopy was asked first");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon is alive")
        .count()
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// The short soak: 32 readers over 200 files of mixed sizes, 5% of ranged GETs broken, a
/// cache smaller than the working set and a short TTL so listings, downloads and evictions
/// all keep churning.
#[test]
fn soak_32_readers_200_files_with_5_percent_faults() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let sizes: Vec<usize> = (0..200)
        .map(|i| match i % 10 {
            0 => 4 << 20,
            1..=4 => 256 << 10,
            _ => 4 << 10,
        })
        .collect();
    let blobs: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| (format!("soak/f{i:03}"), pattern(size, 1000 + i as u64)))
        .collect();
    fx.put_all(&blobs);
    let digests: Vec<_> = blobs
        .iter()
        .map(|(_, data)| adlsfs::digest::xxh3_128(data))
        .collect();
    let mount = fx.mount(&[
        "--fetcher",
        "native",
        "--cache-size",
        "24M",
        "--metadata-ttl",
        "1s",
        "--read-timeout",
        "2s",
    ]);
    let pid = mount.pid();
    // Warm up once so the counts below compare like with like.
    std::fs::read(mount.path().join("soak/f000")).unwrap();
    let fds_before = open_fds(pid);
    proxy.chaos(5);
    let deadline = Instant::now() + Duration::from_secs(20);
    let digests = Arc::new(digests);
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let (root, digests) = (mount.path(), Arc::clone(&digests));
            std::thread::spawn(move || {
                let mut reads = 0;
                while Instant::now() < deadline {
                    let i = fastrand::usize(0..200);
                    let got = match std::fs::read(root.join(format!("soak/f{i:03}"))) {
                        Ok(got) => got,
                        Err(e) => return Err(format!("reading f{i:03}: {e}")),
                    };
                    assert_eq!(
                        adlsfs::digest::xxh3_128(&got),
                        digests[i],
                        "wrong bytes in f{i:03}"
                    );
                    reads += 1;
                }
                Ok(reads)
            })
        })
        .collect();
    let results: Vec<Result<usize, String>> =
        readers.into_iter().map(|r| r.join().unwrap()).collect();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        let log = mount.log();
        let blob = e
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(':')
            .to_string();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("soak/{blob}")) || l.contains("evicted"))
            .take(30)
            .collect();
        panic!("{e}\n{}", errors.join("\n"));
    }
    let reads: usize = results.into_iter().map(|r| r.unwrap()).sum();
    proxy.clear();
    assert!(reads > 200, "only {reads} reads in the soak");
    let injected = proxy.chaos_injected();
    assert!(
        injected >= 5,
        "the soak must actually meet faults: {injected} injected"
    );
    std::thread::sleep(Duration::from_millis(500));
    let fds_after = open_fds(pid);
    assert!(
        fds_after <= fds_before + 8,
        "file descriptors grew: {fds_before} -> {fds_after}"
    );
    assert!(
        peak_rss_mib(pid) <= 256,
        "peak RSS {} MiB",
        peak_rss_mib(pid)
    );
    assert_eq!(fx.temporaries(), 0, "temporaries left");
    eprintln!("soak: {reads} verified reads, {injected} faults injected, fds {fds_before} -> {fds_after}, peak RSS {} MiB", peak_rss_mib(pid));
}

#[test]
fn prefetch_through_faults_gets_every_file_right_or_names_it() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                format!("p/f{i:02}"),
                pattern(300_000 + i * 1000, 90 + i as u64),
            )
        })
        .collect();
    fx.put_all(&files);
    // One blob whose recorded digest is not that of its bytes.
    fx.put_claiming("p/bad", &pattern(300_000, 89), b"other bytes");
    proxy.chaos(20);
    let out = fx.prefetch(&["p", "--fetcher", "native", "--native-chunk-size", "64K"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a failed file fails the prefetch: {err}"
    );
    assert!(
        err.contains("30 downloaded, 0 already cached, 1 failed"),
        "{err}"
    );
    let failed: Vec<&str> = err.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{err}");
    assert!(
        failed[0].contains(&format!("FAILED {}: ", fx.uri("p/bad")))
            && failed[0].contains("mismatch"),
        "{err}"
    );
    assert!(proxy.chaos_injected() > 0, "no fault met");
    let mut cached = fx.cached_blobs();
    cached.sort();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        cached, names,
        "every good file is cached, the bad one is not"
    );

    // Every cached byte is right: a mount reading them downloads nothing more.
    proxy.clear();
    // Whole-file mode: the bad one fails at open, after two downloads.
    let mount = fx.mount(&["--verify-before-read"]);
    for (name, data) in &files {
        assert!(
            std::fs::read(mount.path().join(name)).unwrap() == *data,
            "{name}"
        );
    }
    let err = std::fs::read(mount.path().join("p/bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let metrics = mount.metrics();
    assert_eq!(metrics.get(CACHE_HITS), 30.0, "{metrics}");
    assert_eq!(
        metrics.get(CACHE_MISSES),
        1.0,
        "only the bad one: {metrics}"
    );
    // Downloaded twice by the mount, refused both times.
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 2.0, "{metrics}");
    assert_eq!(
        fx.cached().len(),
        30,
        "still nothing cached for the bad one"
    );
}

#[test]
fn reads_during_an_azcopy_job_are_served_natively_within_a_tenth_of_the_file() {
    let fx = Fixture::builder().proxy().start();
    let proxy = fx.proxy();
    let data = pattern(24 << 20, 67);
    fx.upload("job.bin", &data);
    let mount = fx.mount(&["--fetcher", "azcopy", "--azcopy-min-size", "1M"]);
    let path = mount.path().join("job.bin");
    let file = std::fs::File::open(&path).unwrap();
    let mut tail = vec![0u8; 64 << 10];
    let at = (data.len() - tail.len()) as u64;
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, at).unwrap();
    assert!(tail == data[at as usize..], "the footer's bytes");
    // azcopy needs seconds to start and finish: the open and the footer came before.
    let during = mount.metrics();
    assert_eq!(
        during.fetcher(FETCHES, "azcopy"),
        0.0,
        "the job was still running: {during}"
    );
    let mut all = Vec::new();
    (&file).read_to_end(&mut all).unwrap();
    assert!(all == data, "the whole file, across the job's end");
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "azcopy"), 1.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "native"), 0.0, "{metrics}");
    // The native side's GETs carry no SAS (azcopy's do); each is at most 256 KiB.
    let all_gets = proxy.count(&format!("GET /devstoreaccount1/{}/job.bin", fx.container));
    let side_gets = all_gets - proxy.count("/job.bin?");
    assert!(
        side_gets >= 2,
        "the head and the footer came from the side: {side_gets}"
    );
    assert!(
        side_gets as u64 * (256 << 10) <= data.len() as u64 / 10 + (256 << 10),
        "{side_gets} side GETs: more than a tenth of the file"
    );
    assert_eq!(fx.temporaries(), 0, "the side file is gone too");
}
