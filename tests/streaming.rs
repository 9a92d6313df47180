//! Reads served while a file downloads, under faults, through real mounts: a range broken
//! in transit is fetched again before a byte of it is served, readers anywhere in a cold
//! file cost one download, a handle opened during the download survives its publication,
//! a reader or the daemon killed mid-stream, a disk filling up mid-stream, a whole-file
//! check failing under two open handles, and `verify_before_read` in the mount(8) form.

mod common;

use adlsfs::digest::xxh3_128;
use adlsfs::metrics::{
    CACHE_HITS, CACHE_MISSES, FETCHES, FETCHES_IN_FLIGHT, FETCH_FAILURES, VERIFICATION_FAILURES,
};
use common::entra::Flow;
use common::fixture::{Fixture, SLOW_NATIVE};
use common::proxy::Fault;
use common::{pattern, stderr, wait_until};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

/// The request-line prefix of the GETs of `blob` the proxy saw.
fn get_line(fx: &Fixture, blob: &str) -> String {
    format!("GET /devstoreaccount1/{}/{blob}", fx.container)
}

/// Ranged GETs the proxy forwarded for `blob`.
fn gets(fx: &Fixture, blob: &str) -> usize {
    fx.proxy().count(&get_line(fx, blob))
}

/// Makes every ranged GET of `blob` through the proxy slow: 16 KiB pieces 1 ms apart, so
/// 1 MiB takes at least 64 ms and a file of tens of MiB read one range at a time seconds.
fn trickle(fx: &Fixture, blob: &str) {
    let slow = Fault::Trickle(Duration::from_millis(1));
    fx.proxy()
        .add("GET", &format!("/{blob}"), true, slow, 100_000);
}

/// The errno of a failed read, or 0 when it succeeded.
fn read_errno(file: &mut File, offset: u64, len: usize) -> i32 {
    file.seek(SeekFrom::Start(offset)).unwrap();
    match file.read_exact(&mut vec![0u8; len]) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// 8 MiB in two 4 MiB ranges, both GETs in flight at once (so no reader's demand adds a
/// range), over plain HTTP and in streaming mode: each range is checked against the
/// service's range MD5. `fault` breaks one range response in transit.
fn a_range_broken_in_transit_is_fetched_again(fault: Fault) {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(8 << 20, 71);
    fx.upload("r.bin", &data);
    let mount = fx.mount(&[
        "--fetcher",
        "native",
        "--native-chunk-size",
        "4M",
        "--native-parallelism",
        "2",
    ]);
    fx.proxy().add("GET", "/r.bin", true, fault, 1);
    let got = fs::read(mount.path().join("r.bin")).expect("no error for the reader");
    assert!(got == data, "every byte the reader got is right");
    let metrics = mount.settled_metrics();
    assert_eq!(
        gets(&fx, "r.bin"),
        2 + 1,
        "the broken range alone was fetched again"
    );
    assert_eq!(
        metrics.get(VERIFICATION_FAILURES),
        0.0,
        "caught by the range check, not the whole-file check: {metrics}"
    );
    assert_eq!(metrics.total(FETCH_FAILURES), 0.0, "{metrics}");
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(fx.cached_blobs(), ["r.bin"]);
}

#[test]
fn over_http_a_byte_flipped_in_one_range_is_caught_by_its_md5_and_fetched_again() {
    a_range_broken_in_transit_is_fetched_again(Fault::FlipByte);
}

#[test]
fn over_http_a_range_cut_short_is_fetched_again() {
    a_range_broken_in_transit_is_fetched_again(Fault::CutShort);
}

#[test]
fn over_http_a_range_reset_mid_body_is_fetched_again() {
    a_range_broken_in_transit_is_fetched_again(Fault::ResetMidBody);
}

/// The header adlsfs asks Azure for a range's MD5 with, as Azurite's request log shows it.
const RANGE_MD5_HEADER: &str = "\"x-ms-range-get-content-md5\":\"true\"";

#[test]
fn over_https_ranges_are_md5_checked_only_with_check_ranges() {
    // The fault proxy speaks plain HTTP only: on HTTPS, Azurite's request log shows what
    // was asked for.
    let fx = Fixture::builder()
        .entra(Flow::ClientSecret)
        .request_log()
        .start();
    let data = pattern(8 << 20, 72);
    fx.upload("plain.bin", &data);
    fx.upload("checked.bin", &data);
    // One 8 MiB range by default, TLS protecting it in transit.
    let args = [
        "--fetcher",
        "native",
        "--native-chunk-size",
        "8M",
        "--native-parallelism",
        "1",
    ];
    {
        let mount = fx.mount(&args);
        assert!(fs::read(mount.path().join("plain.bin")).unwrap() == data);
        mount.settled_metrics();
    }
    let plain = fx.blob_get_lines("plain.bin");
    assert_eq!(plain.len(), 1, "one 8 MiB GET: {plain:#?}");
    assert!(
        !plain[0].contains("x-ms-range-get-content-md5"),
        "no range MD5 asked for on HTTPS by default: {}",
        plain[0]
    );

    // --check-ranges: at most 4 MiB per GET, each with its MD5.
    let mut checked_args = args.to_vec();
    checked_args.push("--check-ranges");
    let mount = fx.mount(&checked_args);
    assert!(fs::read(mount.path().join("checked.bin")).unwrap() == data);
    let metrics = mount.settled_metrics();
    let checked = fx.blob_get_lines("checked.bin");
    assert_eq!(checked.len(), 2, "two 4 MiB GETs: {checked:#?}");
    assert!(
        checked.iter().all(|l| l.contains(RANGE_MD5_HEADER)),
        "each asked for its range MD5: {checked:#?}"
    );
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 0.0, "{metrics}");
    assert_eq!(fx.cached().len(), 2);
}

/// [`pattern`] for large sizes, cheap in a debug build: one pseudo-random MiB repeated,
/// with every 4 KiB block stamped with its offset, so no two blocks are alike.
fn large_pattern(len: usize, seed: u64) -> Vec<u8> {
    let mib = pattern(1 << 20, seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&mib[..(len - out.len()).min(mib.len())]);
    }
    for (i, block) in out.chunks_mut(4096).enumerate() {
        let stamp = (i as u64).to_le_bytes();
        let n = stamp.len().min(block.len());
        block[..n].copy_from_slice(&stamp[..n]);
    }
    out
}

#[test]
fn sixteen_readers_at_different_offsets_of_a_cold_file_cost_one_download() {
    let fx = Fixture::builder().proxy().start();
    let size = 64usize << 20;
    let data = Arc::new(large_pattern(size, 73));
    fx.upload("wide.bin", &data);
    // Two slow background GETs: most readers are far from the download front and claim
    // their own ranges.
    trickle(&fx, "wide.bin");
    let mount = fx.mount(&["--fetcher", "native", "--native-parallelism", "2"]);
    let path = mount.path().join("wide.bin");
    let start = Arc::new(Barrier::new(16));
    let readers: Vec<_> = (0..16usize)
        .map(|i| {
            let (path, data, start) = (path.clone(), Arc::clone(&data), Arc::clone(&start));
            std::thread::spawn(move || {
                // Unaligned offsets all over the file, 2 MiB each in 128 KiB reads.
                let offset = i * (4 << 20) + i * 12_345;
                let len = (2 << 20).min(data.len() - offset);
                let mut file = File::open(&path).unwrap();
                start.wait();
                file.seek(SeekFrom::Start(offset as u64)).unwrap();
                let mut got = vec![0u8; len];
                for piece in got.chunks_mut(128 << 10) {
                    file.read_exact(piece).unwrap();
                }
                assert!(
                    got == data[offset..offset + len],
                    "reader {i} at {offset} got wrong bytes"
                );
            })
        })
        .collect();
    for r in readers {
        r.join().expect("a reader failed");
    }
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 0.0, "{metrics}");
    let served = fx.proxy().bytes_served(&get_line(&fx, "wide.bin"));
    assert!(
        served >= size && served as f64 <= 1.05 * size as f64,
        "{served} bytes served for a {size}-byte file ({} GETs)",
        gets(&fx, "wide.bin")
    );
    assert_eq!(fx.cached().into_values().collect::<Vec<_>>(), [size as u64]);
}

#[test]
fn a_handle_opened_during_the_download_stays_good_across_publication_and_beside_later_opens() {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(24 << 20, 74);
    fx.upload("p.bin", &data);
    trickle(&fx, "p.bin");
    let mount = fx.mount(&SLOW_NATIVE);
    let path = mount.path().join("p.bin");

    let mut early = File::open(&path).unwrap();
    let mut head = vec![0u8; 1 << 20];
    early.read_exact(&mut head).unwrap();
    assert!(head == data[..head.len()]);
    let during = mount.metrics();
    assert_eq!(
        during.get(FETCHES_IN_FLIGHT),
        1.0,
        "the early handle was opened and read during the download: {during}"
    );

    // Published while the early handle is open.
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(fx.cached_blobs(), ["p.bin"]);

    // A second open of the published file while the daemon-served one is open: served
    // by the daemon too (a passthrough open would fail with EIO since Linux 6.9).
    let mut second = File::open(&path).expect("the second open, the first still open");
    let mut all = Vec::new();
    second
        .read_to_end(&mut all)
        .expect("the second handle reads");
    assert!(all == data, "the second handle reads the whole file");
    let mut rest = Vec::new();
    early
        .read_to_end(&mut rest)
        .expect("the early handle reads on");
    assert!(
        rest == data[head.len()..],
        "the early handle reads the rest"
    );
    assert_eq!(common::close_errno(second), 0);
    assert_eq!(common::close_errno(early), 0);

    // None left open: this one may use passthrough.
    let mut third = File::open(&path).expect("the third open");
    let log = mount.log();
    assert!(
        log.contains("passthrough=true"),
        "passthrough expected on this kernel:\n{log}"
    );
    // Passthrough reads go to the cache file, not to the daemon: with the kernel's pages
    // of the FUSE file dropped and the daemon stopped, they are still answered.
    // SAFETY: a valid descriptor; DONTNEED only drops clean cached pages.
    let dropped = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&third),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(dropped, 0);
    let daemon = mount.pid() as i32;
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = tx.send(third.read_to_end(&mut all).map(|_| all));
    });
    let third_read = rx.recv_timeout(Duration::from_secs(3));
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    let all = third_read
        .expect("the third handle's reads waited for the stopped daemon: not passthrough")
        .expect("the third handle reads");
    assert!(all == data, "the third handle reads the whole file");
    let log = mount.log();
    assert!(
        !log.contains("passthrough unavailable"),
        "no open was refused passthrough:\n{log}"
    );
    let metrics = mount.metrics();
    assert_eq!(metrics.get(CACHE_MISSES), 1.0, "{metrics}");
}

/// Bytes the process has read through read(2) and the like, from /proc/<pid>/io.
fn rchar(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[test]
fn a_reader_killed_mid_stream_leaves_the_download_to_finish_and_be_published() {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(24 << 20, 75);
    fx.upload("k.bin", &data);
    trickle(&fx, "k.bin");
    let mount = fx.mount(&SLOW_NATIVE);
    let path = mount.path().join("k.bin");
    let mut reader = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=64K"])
        .spawn()
        .unwrap();
    let pid = reader.id();
    // dd's own rchar starts small (its libraries): wait for a MiB of the file.
    wait_until("the reader to read 1 MiB", || rchar(pid) >= 1 << 20);
    assert!(reader.try_wait().unwrap().is_none(), "dd finished too soon");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let status = reader.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let killed = mount.metrics();
    assert_eq!(
        killed.get(FETCHES_IN_FLIGHT),
        1.0,
        "the reader died mid-download: {killed}"
    );

    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 0.0, "{metrics}");
    let entries = fx.cached();
    assert_eq!(fx.temporaries(), 0, "no temporary left");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (entry, len) = entries.into_iter().next().unwrap();
    assert!(entry.starts_with("k.bin@"), "{entry}");
    assert_eq!(len, data.len() as u64);
    let cached = fs::read(fx.entry_dir().join(&entry)).unwrap();
    assert_eq!(xxh3_128(&cached), xxh3_128(&data), "the entry is whole");

    let hits = metrics.get(CACHE_HITS);
    assert!(fs::read(&path).unwrap() == data);
    let after = mount.metrics();
    assert_eq!(after.get(CACHE_HITS), hits + 1.0, "{after}");
    assert_eq!(after.get(CACHE_MISSES), 1.0, "{after}");
    assert_eq!(after.fetcher(FETCHES, "native"), 1.0, "{after}");
}

#[test]
fn the_daemon_killed_mid_stream_fails_the_reader_within_seconds_and_a_remount_recovers() {
    let fx = Fixture::builder().proxy().start();
    let data = Arc::new(pattern(24 << 20, 76));
    fx.upload("d.bin", &data);
    trickle(&fx, "d.bin");
    let mut first = fx.mount(&SLOW_NATIVE);
    let path = first.path().join("d.bin");
    let read_so_far = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let progress = Arc::clone(&read_so_far);
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let result = File::open(&path).and_then(|mut f| {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                got.extend_from_slice(&buf[..n]);
                progress.store(got.len(), Ordering::SeqCst);
            }
        });
        let _ = tx.send((result, got));
    });
    wait_until("the reader to get 1 MiB", || {
        read_so_far.load(Ordering::SeqCst) >= 1 << 20
    });
    assert_eq!(first.metrics().get(FETCHES_IN_FLIGHT), 1.0);
    first.kill9();
    let killed = Instant::now();
    let (result, got) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the reader still hangs 5 s after the daemon died");
    assert!(
        result.is_err(),
        "the reader gets an error, not the end of the file, after {} bytes",
        got.len()
    );
    assert!(killed.elapsed() < Duration::from_secs(5));
    assert!(
        got.len() < data.len() && got == data[..got.len()],
        "what was read before is right ({} bytes)",
        got.len()
    );
    assert_eq!(fx.temporaries(), 1, "the dead daemon's temporary is left");
    drop(first);

    fx.proxy().clear();
    let second = fx.mount(&["--fetcher", "native"]);
    assert_eq!(fx.temporaries(), 0, "start-up removed the stale temporary");
    assert!(fs::read(second.path().join("d.bin")).unwrap() == *data);
    assert_eq!(fx.cached_blobs(), ["d.bin"]);
}

#[test]
fn the_cache_disk_filling_up_mid_stream_does_not_break_the_download() {
    let fx = Fixture::builder().proxy().tmpfs_cache("96M").start();
    let data = pattern(24 << 20, 77);
    fx.upload("full.bin", &data);
    trickle(&fx, "full.bin");
    let mount = fx.mount(&[&SLOW_NATIVE[..], &["--cache-min-free", "0"]].concat());
    let path = mount.path().join("full.bin");
    let mut file = File::open(&path).unwrap();
    let mut got = vec![0u8; 1 << 20];
    file.read_exact(&mut got).unwrap();

    // The rest of the disk fills up behind adlsfs's back while the file streams.
    let filler = fx.cache_disk().join("filler");
    let dd = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert!(
        stderr(&dd).contains("No space left on device"),
        "dd filled the disk: {}",
        stderr(&dd)
    );
    let full = mount.metrics();
    assert_eq!(
        full.get(FETCHES_IN_FLIGHT),
        1.0,
        "the disk was full while the file still streamed: {full}"
    );

    // The whole file was allocated up front: the stream completes and is published.
    file.read_to_end(&mut got).expect("the stream completes");
    assert!(got == data, "every byte right");
    assert_eq!(common::close_errno(file), 0);
    let metrics = mount.settled_metrics();
    assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 0.0, "{metrics}");
    assert_eq!(
        fx.cached().into_values().collect::<Vec<_>>(),
        [data.len() as u64]
    );
    assert_eq!(fx.temporaries(), 0);
    let entry = fx.cached().into_keys().next().unwrap();
    assert_eq!(
        xxh3_128(&fs::read(fx.entry_dir().join(entry)).unwrap()),
        xxh3_128(&data)
    );
}

#[test]
fn open_and_the_first_4k_of_a_slow_download_come_long_before_its_end() {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(24 << 20, 78);
    fx.upload("slow.bin", &data);
    trickle(&fx, "slow.bin");
    let mount = fx.mount(&SLOW_NATIVE);
    let start = Instant::now();
    let mut file = File::open(mount.path().join("slow.bin")).unwrap();
    let mut got = vec![0u8; 4096];
    file.read_exact(&mut got).unwrap();
    let first = start.elapsed();
    file.read_to_end(&mut got).unwrap();
    let whole = start.elapsed();
    assert!(got == data);
    assert!(
        whole > Duration::from_secs(1),
        "the download was too fast to show anything: {whole:?}"
    );
    assert!(
        first.as_secs_f64() < 0.3 * whole.as_secs_f64(),
        "open + 4 KiB took {first:?} of {whole:?}"
    );
}

#[test]
fn a_failed_final_check_fails_both_open_handles_reads_and_closes() {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(16 << 20, 79);
    fx.put_claiming("bad.bin", &data, b"other bytes");
    trickle(&fx, "bad.bin");
    let mount = fx.mount(&SLOW_NATIVE);
    let path = mount.path().join("bad.bin");
    let mut a = File::open(&path).unwrap();
    let mut b = File::open(&path).unwrap();
    for file in [&mut a, &mut b] {
        let mut head = vec![0u8; 64 << 10];
        file.read_exact(&mut head).unwrap();
        assert!(head == data[..head.len()], "the head is served to each");
    }
    assert_eq!(mount.metrics().failures("corrupt"), 0.0, "no verdict yet");
    wait_until("the final check to fail", || {
        mount.metrics().failures("corrupt") == 1.0
    });
    // Offsets neither handle read (nor the kernel read ahead).
    assert_eq!(read_errno(&mut a, 12 << 20, 4096), libc::EIO);
    assert_eq!(read_errno(&mut b, 14 << 20, 4096), libc::EIO);
    assert_eq!(
        common::close_errno(a),
        libc::EIO,
        "close() of the first handle"
    );
    assert_eq!(
        common::close_errno(b),
        libc::EIO,
        "close() of the second handle"
    );
    let metrics = mount.metrics();
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 1.0, "{metrics}");
    assert_eq!(fx.cached_blobs(), Vec::<String>::new());
    assert_eq!(fx.temporaries(), 0, "temporary left behind");
}

#[test]
fn verify_before_read_as_a_mount_option_serves_the_first_byte_only_after_the_whole_file() {
    let fx = Fixture::builder().proxy().start();
    let data = pattern(16 << 20, 80);
    fx.upload("whole.bin", &data);
    trickle(&fx, "whole.bin");
    let mount = fx.mount_form(
        "fetcher=native,native_parallelism=1,native_chunk_size=1M,verify_before_read,ro,nodev",
    );
    let start = Instant::now();
    let mut file = File::open(mount.path().join("whole.bin")).unwrap();
    let opened = start.elapsed();
    let metrics = mount.metrics();
    assert_eq!(
        metrics.fetcher(FETCHES, "native"),
        1.0,
        "the download was over when the open returned: {metrics}"
    );
    assert_eq!(metrics.get(FETCHES_IN_FLIGHT), 0.0, "{metrics}");
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    let whole = start.elapsed();
    assert!(got == data);
    assert!(
        whole > Duration::from_secs(1),
        "the download was too fast to show anything: {whole:?}"
    );
    assert!(
        opened.as_secs_f64() > 0.8 * whole.as_secs_f64(),
        "the open took {opened:?} of {whole:?}"
    );
    // In whole-file mode on plain HTTP no range is MD5-checked: 1 MiB ranges as asked.
    assert_eq!(gets(&fx, "whole.bin"), 16);
}
