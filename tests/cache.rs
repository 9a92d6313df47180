//! The node cache as a shared, durable, bounded resource: several mount processes on one
//! cache directory, a daemon killed mid-download, a size bound smaller than the working
//! set, corruption on disk, and a full disk (a small tmpfs).

mod common;

use adlsfs::metrics::{CACHE_MISSES, EVICTIONS};
use common::fixture::{Fixture, SLOW_NATIVE};
use common::{adlsfs_command, pattern, stderr, wait_until};
use std::fs;
use std::io::Read;
use std::process::Command;

/// Sizes of the complete entries in the cache.
fn entry_sizes(fx: &Fixture) -> Vec<u64> {
    fx.cached().into_values().collect()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_mount_processes_on_one_cache_download_a_blob_once() {
    let fx = Fixture::builder().request_log().start();
    let data = pattern(40 << 20, 21);
    fx.upload("shared.bin", &data);
    fx.upload("alone.bin", &data);
    let a = fx.mount(&["--fetcher", "native"]);
    let b = fx.mount(&["--fetcher", "native"]);
    // The baseline: what one cold reader costs.
    fs::read(a.path().join("alone.bin")).unwrap();
    let single = fx.blob_gets("alone.bin");
    assert!(single >= 1, "the request log counts the baseline's GETs");

    let readers: Vec<_> = (0..16)
        .map(|i| {
            let path = if i % 2 == 0 { a.path() } else { b.path() }.join("shared.bin");
            std::thread::spawn(move || adlsfs::digest::xxh3_128(&fs::read(path).unwrap()))
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), adlsfs::digest::xxh3_128(&data));
    }
    assert_eq!(
        fx.blob_gets("shared.bin"),
        single,
        "one download across both processes"
    );
    assert_eq!(entry_sizes(&fx), [40 << 20, 40 << 20]);
}

#[test]
fn a_daemon_killed_mid_download_leaves_nothing_a_remount_cannot_recover() {
    let fx = Fixture::start();
    let data = pattern(160 << 20, 22);
    fx.upload("big.bin", &data);
    let mut first = fx.mount(&SLOW_NATIVE);
    let path = first.path().join("big.bin");
    // Bytes come while the file arrives: the reader reads on until the daemon dies.
    let reader = std::thread::spawn(move || {
        fs::File::open(path).and_then(|mut f| f.read_to_end(&mut Vec::new()))
    });
    wait_until("the download to start", || fx.temporaries() > 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    first.kill9();
    let result = reader.join().unwrap();
    assert!(
        result.is_err(),
        "the reader gets an error, not a hang or the end of the file: {result:?}"
    );
    assert_eq!(
        fx.temporaries(),
        1,
        "the dead daemon's partial download is left"
    );
    assert!(fx.cached().is_empty(), "nothing partial became an entry");
    drop(first);

    let second = fx.mount(&["--fetcher", "native"]);
    assert_eq!(fx.temporaries(), 0, "start-up removed the stale temporary");
    assert!(
        second.log().contains("removed stale temporary"),
        "{}",
        second.log()
    );
    assert!(fs::read(second.path().join("big.bin")).unwrap() == data);
    assert_eq!(fx.cached_blobs(), ["big.bin"]);
}

#[test]
fn a_bounded_cache_evicts_least_recently_used_and_never_an_open_file() {
    let fx = Fixture::start();
    let files: Vec<Vec<u8>> = (0..6).map(|i| pattern(16 << 20, 100 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        fx.upload(&format!("f{i}.bin"), data);
    }
    let bound: u64 = 50 << 20;
    let mount = fx.mount(&["--fetcher", "native", "--cache-size", "50M"]);
    // Hold f0 open while everything else is read around it.
    let mut held = fs::File::open(mount.path().join("f0.bin")).unwrap();
    for round in 0..2 {
        for (i, data) in files.iter().enumerate().skip(1) {
            let got = fs::read(mount.path().join(format!("f{i}.bin"))).unwrap();
            assert!(got == *data, "round {round}: bytes of f{i}");
            let used: u64 = entry_sizes(&fx).iter().sum();
            assert!(
                used <= bound,
                "round {round} after f{i}: {used} bytes cached, bound {bound}"
            );
        }
    }
    let mut got = Vec::new();
    held.read_to_end(&mut got).unwrap();
    assert!(
        got == files[0],
        "the open file survived the evictions around it"
    );
    // At most three 16 MiB entries fit, so the five files read around f0 are all
    // downloaded again in the second round, each evicting another.
    let metrics = mount.metrics();
    assert_eq!(metrics.get(CACHE_MISSES), 11.0, "{metrics}");
    assert!(metrics.get(EVICTIONS) >= 5.0, "{metrics}");
    assert!(entry_sizes(&fx).contains(&(16 << 20)));
}

#[test]
fn cache_verify_finds_and_removes_a_corrupted_entry() {
    let fx = Fixture::start();
    let data = pattern(3 << 20, 23);
    fx.upload("dir/model.bin", &data);
    fx.upload("other.bin", &pattern(1 << 20, 24));
    {
        let mount = fx.mount(&[]);
        fs::read(mount.path().join("dir/model.bin")).unwrap();
        fs::read(mount.path().join("other.bin")).unwrap();
    }
    let ls = stdout_of(&fx.cache_cli(&["ls"]));
    assert!(ls.contains(&fx.uri("dir/model.bin")), "{ls}");
    let stats = stdout_of(&fx.cache_cli(&["stats"]));
    assert!(stats.contains("entries: 2"), "{stats}");

    // Flip one byte in the middle of the cached model (bit rot, same length).
    let key = fx
        .cached()
        .into_keys()
        .find(|k| k.starts_with("dir/model.bin@"))
        .expect("the model is cached");
    let entry = fx.entry_dir().join(key);
    let mut bytes = fs::read(&entry).unwrap();
    bytes[1 << 20] ^= 0xFF;
    fs::write(&entry, &bytes).unwrap();

    let verify = fx.cache_cli(&["verify"]);
    let out = stdout_of(&verify);
    assert!(
        !verify.status.success(),
        "corruption is reported by the exit code"
    );
    assert!(
        out.contains("removed corrupt entry") && out.contains("dir/model.bin"),
        "{out}"
    );
    assert!(out.contains("verified 2 entries: 1 corrupt"), "{out}");
    assert!(!entry.exists());
    let again = fx.cache_cli(&["verify"]);
    assert!(again.status.success(), "{}", stdout_of(&again));

    let mount = fx.mount(&[]);
    assert!(
        fs::read(mount.path().join("dir/model.bin")).unwrap() == data,
        "re-downloaded intact"
    );
}

#[test]
fn a_full_disk_gives_enospc_cleans_up_and_the_mount_keeps_working() {
    let fx = Fixture::builder().tmpfs_cache("64M").start();
    let too_big = pattern(80 << 20, 30);
    fx.upload("too-big.bin", &too_big);
    let mid: Vec<Vec<u8>> = (0..3).map(|i| pattern(24 << 20, 40 + i)).collect();
    for (i, data) in mid.iter().enumerate() {
        fx.upload(&format!("mid{i}.bin"), data);
    }
    fx.upload("small.txt", b"still here");
    let mount = fx.mount(&["--fetcher", "native", "--cache-min-free", "0"]);

    // Larger than the whole disk: ENOSPC at once, logged with the numbers.
    let err = fs::read(mount.path().join("too-big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        mount.log().contains("larger than the cache filesystem"),
        "{}",
        mount.log()
    );

    // Three 24 MiB files on 64 MiB: the third fits only after evicting the first.
    for (i, data) in mid.iter().enumerate() {
        assert!(fs::read(mount.path().join(format!("mid{i}.bin"))).unwrap() == *data);
    }
    let metrics = mount.metrics();
    assert!(metrics.get(EVICTIONS) >= 1.0, "{metrics}");
    assert_eq!(fx.cached_blobs(), ["mid1.bin", "mid2.bin"]);

    // Keep the cached files open so eviction cannot free space.
    let hold: Vec<fs::File> = fx
        .cached_blobs()
        .iter()
        .map(|blob| fs::File::open(mount.path().join(blob)).expect("opening a cached file"))
        .collect();
    // The disk fills up behind adlsfs's back: a download fails cleanly with ENOSPC.
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
    fs::remove_dir_all(fx.entry_dir()).unwrap();
    let err = fs::read(mount.path().join("mid0.bin")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "{err}\n{}",
        mount.log()
    );
    assert_eq!(fx.temporaries(), 0, "the partial download was removed");

    // Space comes back: the mount works again, nothing restarted.
    fs::remove_file(&filler).unwrap();
    drop(hold);
    assert_eq!(
        fs::read(mount.path().join("small.txt")).unwrap(),
        b"still here"
    );
    assert!(fs::read(mount.path().join("mid0.bin")).unwrap() == mid[0]);
}

#[test]
fn cache_gc_evicts_down_to_the_given_bound() {
    let fx = Fixture::start();
    for i in 0..3 {
        fx.upload(&format!("g{i}.bin"), &pattern(2 << 20, 50 + i));
    }
    {
        let mount = fx.mount(&[]);
        for i in 0..3 {
            fs::read(mount.path().join(format!("g{i}.bin"))).unwrap();
        }
    }
    assert_eq!(fx.cached().len(), 3);
    let gc = fx.cache_cli(&["gc", "--cache-size", "5M"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert_eq!(fx.cached().len(), 2, "{}", stdout_of(&gc));
    let gc = fx.cache_cli(&["gc", "--cache-size", "0"]);
    assert!(
        stdout_of(&gc).contains("evicted 2 entries"),
        "{}",
        stdout_of(&gc)
    );
    assert!(fx.cached().is_empty());
    let bad = adlsfs_command()
        .args(["cache", "stats", "--cache-dir", "/nonexistent-cache"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not an adlsfs cache directory"));
}

#[test]
fn a_cache_directory_deleted_or_made_read_only_while_mounted_recovers() {
    let fx = Fixture::builder().tmpfs_cache("64M").start();
    let files: Vec<Vec<u8>> = (0..3).map(|i| pattern(2 << 20, 80 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        fx.upload(&format!("n{i}.bin"), data);
    }
    let mount = fx.mount(&["--fetcher", "native"]);
    let mut held = fs::File::open(mount.path().join("n0.bin")).unwrap();
    // The open returned early; its download is published before the disk turns read-only.
    mount.settled_metrics();

    // Read-only: opens that need the cache fail clearly, open files keep working.
    let remount = |mode: &str| {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(fx.cache_disk())
            .output()
            .unwrap();
        assert!(out.status.success(), "remount {mode}: {}", stderr(&out));
    };
    remount("ro");
    let err = fs::read(mount.path().join("n1.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        mount.log().contains("Read-only file system"),
        "{}",
        mount.log()
    );
    let mut got = Vec::new();
    held.read_to_end(&mut got).unwrap();
    assert!(
        got == files[0],
        "a file open before the fault keeps working"
    );

    // Writable again: the same open succeeds, nothing restarted.
    remount("rw");
    assert!(fs::read(mount.path().join("n1.bin")).unwrap() == files[1]);

    // Deleted under the mount: the next open recreates it.
    drop(held);
    fs::remove_dir_all(fx.cache()).unwrap();
    assert!(fs::read(mount.path().join("n2.bin")).unwrap() == files[2]);
    assert_eq!(
        fx.cached_blobs(),
        ["n2.bin"],
        "recreated, with the new entry"
    );
}
