//! Faults injected for real between adlsfs (or azcopy) and Azurite by a reverse proxy:
//! a reader gets the right bytes or a clear error, never wrong or partial bytes, never a
//! hang, and the mount keeps serving everything else.

mod common;

use adlsfs::storage::BlobStore;
use bytes::Bytes;
use common::mount::Mount;
use common::proxy::{Fault, FaultProxy};
use common::{pattern, put_file, rt, with_digest, Azurite};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A mount whose storage endpoint is the proxy.
fn mount_via(
    azurite: &Azurite,
    proxy: &FaultProxy,
    container: &str,
    cache: &std::path::Path,
    extra: &[&str],
) -> Mount {
    let endpoint = proxy.endpoint().to_string();
    let mut args = vec!["--endpoint", endpoint.as_str()];
    args.extend_from_slice(extra);
    Mount::start(
        azurite,
        &format!("adls://devstoreaccount1/{container}"),
        cache,
        &args,
    )
}

#[test]
fn transient_faults_are_retried_and_the_bytes_are_right() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(24 << 20, 61);
    put_file(&store, "fault.bin", &data);
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &[
            "--fetcher",
            "native",
            "--native-chunk-size",
            "4M",
            "--read-timeout",
            "1s",
            "--retry-timeout",
            "20s",
        ],
    );
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
    let gets = proxy.count("GET /devstoreaccount1/") - proxy.count("comp=list");
    assert!(
        gets >= 6 + 7,
        "the faulted ranges were fetched again: {gets} GETs"
    );
}

#[test]
fn a_blob_overwritten_mid_fetch_never_mixes_versions() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let old = pattern(4 << 20, 62);
    let new = pattern(4 << 20, 63);
    rt().block_on(store.put("v.bin", Bytes::from(old.clone()), &with_digest(&old)))
        .unwrap();
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &[
            "--fetcher",
            "native",
            "--native-chunk-size",
            "1M",
            "--native-parallelism",
            "1",
            "--metadata-ttl",
            "1s",
        ],
    );
    // The first ranged GET goes through; before the second, the blob is replaced.
    let store = Arc::new(store);
    let (s, n) = (Arc::clone(&store), new.clone());
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
    // The download of the old version fails on If-Match; the kernel looks the path up
    // again (ESTALE) and opens the new version: never a mix, never the stale bytes.
    let got = std::fs::read(mount.path().join("v.bin")).unwrap();
    assert!(got == new, "only the new version's bytes");
    let log = mount.log();
    assert!(log.contains("changed"), "{log}");
    assert_eq!(
        std::fs::read_dir(cache.path().join("tmp")).unwrap().count(),
        0
    );
    let entries: Vec<_> = std::fs::read_dir(
        cache
            .path()
            .join(format!("v1/devstoreaccount1/{container}")),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name())
    .collect();
    assert_eq!(
        entries.len(),
        1,
        "only the new version is cached: {entries:?}"
    );
}

#[test]
fn a_spent_retry_budget_is_eio_and_the_next_open_tries_afresh() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(2 << 20, 64);
    rt().block_on(store.put("down.bin", Bytes::from(data.clone()), &with_digest(&data)))
        .unwrap();
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &["--fetcher", "native", "--retry-timeout", "2s"],
    );
    proxy.add("GET", "/down.bin", true, Fault::Status(500, None), 10_000);
    let start = Instant::now();
    let err = std::fs::read(mount.path().join("down.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    let log = mount.log();
    assert!(
        log.contains("down.bin") && log.contains("could not materialise"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("tmp")).unwrap().count(),
        0
    );
    proxy.clear();
    assert!(
        std::fs::read(mount.path().join("down.bin")).unwrap() == data,
        "no poisoned negative cache"
    );
}

#[test]
fn the_mount_stays_responsive_while_one_blob_server_stalls() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    rt().block_on(store.put(
        "cached.txt",
        Bytes::from_static(b"fast"),
        &with_digest(b"fast"),
    ))
    .unwrap();
    rt().block_on(store.put(
        "stuck.bin",
        Bytes::from(pattern(1 << 20, 65)),
        &with_digest(&pattern(1 << 20, 65)),
    ))
    .unwrap();
    for i in 0..10 {
        rt().block_on(store.put(
            &format!("other/f{i}"),
            Bytes::from_static(b"x"),
            &with_digest(b"x"),
        ))
        .unwrap();
    }
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &[
            "--fetcher",
            "native",
            "--read-timeout",
            "2s",
            "--retry-timeout",
            "5s",
        ],
    );
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
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(24 << 20, 66);
    put_file(&store, "az.bin", &data);
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &[
            "--fetcher",
            "azcopy",
            "--azcopy-min-size",
            "1M",
            "--azcopy-stall-timeout",
            "3s",
        ],
    );
    // azcopy's requests carry its SAS in the query; the native fetcher's do not.
    proxy.add("GET", "/az.bin?", true, Fault::Stall, 10_000);
    let got = std::fs::read(mount.path().join("az.bin")).unwrap();
    assert!(got == data);
    let log = mount.log();
    assert!(
        log.contains("no progress") && log.contains("falling back to the native fetcher"),
        "{log}"
    );
    assert!(log.contains("fetcher=\"native\""), "{log}");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
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
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let sizes: Vec<usize> = (0..200)
        .map(|i| match i % 10 {
            0 => 4 << 20,
            1..=4 => 256 << 10,
            _ => 4 << 10,
        })
        .collect();
    let digests: Vec<_> = rt().block_on(async {
        use futures::stream::{self, StreamExt};
        stream::iter(sizes.iter().enumerate())
            .map(|(i, &size)| {
                let store = &store;
                async move {
                    let data = pattern(size, 1000 + i as u64);
                    store
                        .put(
                            &format!("soak/f{i:03}"),
                            Bytes::from(data.clone()),
                            &with_digest(&data),
                        )
                        .await
                        .unwrap();
                    adlsfs::digest::xxh3_128(&data)
                }
            })
            .buffered(16)
            .collect()
            .await
    });
    let proxy = FaultProxy::start(azurite.port);
    let cache = tempfile::tempdir().unwrap();
    let mount = mount_via(
        &azurite,
        &proxy,
        &container,
        cache.path(),
        &[
            "--fetcher",
            "native",
            "--cache-size",
            "24M",
            "--metadata-ttl",
            "1s",
            "--read-timeout",
            "2s",
        ],
    );
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
    assert_eq!(
        std::fs::read_dir(cache.path().join("tmp")).unwrap().count(),
        0,
        "temporaries left"
    );
    eprintln!("soak: {reads} verified reads, {injected} faults injected, fds {fds_before} -> {fds_after}, peak RSS {} MiB", peak_rss_mib(pid));
}

#[test]
fn prefetch_through_faults_gets_every_file_right_or_names_it() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let files: Vec<Vec<u8>> = (0..30)
        .map(|i| pattern(300_000 + i * 1000, 90 + i as u64))
        .collect();
    for (i, data) in files.iter().enumerate() {
        rt().block_on(store.put(
            &format!("p/f{i:02}"),
            Bytes::from(data.clone()),
            &with_digest(data),
        ))
        .unwrap();
    }
    let proxy = FaultProxy::start(azurite.port);
    proxy.chaos(20);
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::adlsfs_bin())
        .args([
            "prefetch",
            &format!("adls://devstoreaccount1/{container}"),
            "p",
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "--endpoint",
            proxy.endpoint().as_str(),
            "--fetcher",
            "native",
            "--native-chunk-size",
            "64K",
        ])
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azurite.connection_string(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("30 downloaded") && err.contains("0 failed"),
        "{err}"
    );
    assert!(proxy.chaos_injected() > 0, "no fault met");
    // Every cached byte is right: a mount reading them downloads nothing more.
    proxy.clear();
    let mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        cache.path(),
        &[],
    );
    for (i, data) in files.iter().enumerate() {
        assert!(std::fs::read(mount.path().join(format!("p/f{i:02}"))).unwrap() == *data);
    }
    let stats = std::process::Command::new(common::adlsfs_bin())
        .arg("stats")
        .arg(mount.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stats.stdout);
    assert_eq!(
        adlsfs::metrics::sample(&text, "adlsfs_cache_misses_total"),
        Some(0.0),
        "{text}"
    );
}
