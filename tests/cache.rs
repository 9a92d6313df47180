//! The node cache as a shared, durable, bounded resource: several mount processes on one
//! cache directory, a daemon killed mid-download, a size bound smaller than the working
//! set, corruption on disk, and a full disk (a small tmpfs).

mod common;

use common::mount::Mount;
use common::{adlsfs_bin, pattern, put_file, rt, Azurite};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Sizes of the complete entries in the cache.
fn entries(cache: &Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut stack = vec![cache.join("v1")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                sizes.push(m.len());
            }
        }
    }
    sizes
}

fn temporaries(cache: &Path) -> usize {
    fs::read_dir(cache.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn cache_cli(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(adlsfs_bin())
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap()
}

#[test]
fn two_mount_processes_on_one_cache_download_a_blob_once() {
    let azurite = Azurite::start_logged();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(40 << 20, 21);
    put_file(&store, "shared.bin", &data);
    put_file(&store, "alone.bin", &data);
    let cache = tempfile::tempdir().unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    let args = ["--fetcher", "native"];
    let a = Mount::start(&azurite, &location, cache.path(), &args);
    let b = Mount::start(&azurite, &location, cache.path(), &args);
    // The baseline: what one cold reader costs.
    fs::read(a.path().join("alone.bin")).unwrap();
    let single = azurite.blob_gets(&container, "alone.bin");

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
        azurite.blob_gets(&container, "shared.bin"),
        single,
        "one download across both processes"
    );
    assert_eq!(entries(cache.path()), [40 << 20, 40 << 20]);
}

#[test]
fn a_daemon_killed_mid_download_leaves_nothing_a_remount_cannot_recover() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(160 << 20, 22);
    put_file(&store, "big.bin", &data);
    let cache = tempfile::tempdir().unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    let slow = [
        "--fetcher",
        "native",
        "--native-parallelism",
        "1",
        "--native-chunk-size",
        "1M",
    ];
    let mut first = Mount::start(&azurite, &location, cache.path(), &slow);
    let path = first.path().join("big.bin");
    let reader =
        std::thread::spawn(move || fs::File::open(path).and_then(|mut f| f.read(&mut [0u8; 1])));
    let deadline = Instant::now() + Duration::from_secs(20);
    while temporaries(cache.path()) == 0 {
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    first.kill9();
    let result = reader.join().unwrap();
    assert!(
        result.is_err(),
        "the reader gets an error, not a hang or bytes: {result:?}"
    );
    assert_eq!(
        temporaries(cache.path()),
        1,
        "the dead daemon's partial download is left"
    );
    assert!(
        entries(cache.path()).is_empty(),
        "nothing partial became an entry"
    );
    drop(first);

    let second = Mount::start(&azurite, &location, cache.path(), &["--fetcher", "native"]);
    assert_eq!(
        temporaries(cache.path()),
        0,
        "start-up removed the stale temporary"
    );
    assert!(
        second.log().contains("removed stale temporary"),
        "{}",
        second.log()
    );
    assert!(fs::read(second.path().join("big.bin")).unwrap() == data);
}

#[test]
fn a_bounded_cache_evicts_least_recently_used_and_never_an_open_file() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let files: Vec<Vec<u8>> = (0..6).map(|i| pattern(16 << 20, 100 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        put_file(&store, &format!("f{i}.bin"), data);
    }
    let cache = tempfile::tempdir().unwrap();
    let bound: u64 = 50 << 20;
    let mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        cache.path(),
        &["--fetcher", "native", "--cache-size", "50M"],
    );
    // Hold f0 open while everything else is read around it.
    let mut held = fs::File::open(mount.path().join("f0.bin")).unwrap();
    for round in 0..2 {
        for (i, data) in files.iter().enumerate().skip(1) {
            let got = fs::read(mount.path().join(format!("f{i}.bin"))).unwrap();
            assert!(got == *data, "round {round}: bytes of f{i}");
            let used: u64 = entries(cache.path()).iter().sum();
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
    assert!(mount.log().contains("evicted"), "{}", mount.log());
    assert!(entries(cache.path()).contains(&(16 << 20)));
}

#[test]
fn cache_verify_finds_and_removes_a_corrupted_entry() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(3 << 20, 23);
    put_file(&store, "dir/model.bin", &data);
    put_file(&store, "other.bin", &pattern(1 << 20, 24));
    let cache = tempfile::tempdir().unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    {
        let mount = Mount::start(&azurite, &location, cache.path(), &[]);
        fs::read(mount.path().join("dir/model.bin")).unwrap();
        fs::read(mount.path().join("other.bin")).unwrap();
    }
    let ls = cache_cli(&["ls"], cache.path());
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        ls.contains(&format!(
            "adls://devstoreaccount1/{container}/dir/model.bin"
        )),
        "{ls}"
    );
    let stats = String::from_utf8_lossy(&cache_cli(&["stats"], cache.path()).stdout).into_owned();
    assert!(stats.contains("entries: 2"), "{stats}");

    // Flip one byte in the middle of the cached model (bit rot, same length).
    let entry = fs::read_dir(
        cache
            .path()
            .join(format!("v1/devstoreaccount1/{container}/dir")),
    )
    .unwrap()
    .next()
    .unwrap()
    .unwrap()
    .path();
    let mut bytes = fs::read(&entry).unwrap();
    bytes[1 << 20] ^= 0xFF;
    fs::write(&entry, &bytes).unwrap();

    let verify = cache_cli(&["verify"], cache.path());
    let out = String::from_utf8_lossy(&verify.stdout).into_owned();
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
    let again = cache_cli(&["verify"], cache.path());
    assert!(again.status.success());

    let mount = Mount::start(&azurite, &location, cache.path(), &[]);
    assert!(
        fs::read(mount.path().join("dir/model.bin")).unwrap() == data,
        "re-downloaded intact"
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        SmallDisk(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_gives_enospc_cleans_up_and_the_mount_keeps_working() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let too_big = pattern(80 << 20, 30);
    put_file(&store, "too-big.bin", &too_big);
    let mid: Vec<Vec<u8>> = (0..3).map(|i| pattern(20 << 20, 40 + i)).collect();
    for (i, data) in mid.iter().enumerate() {
        put_file(&store, &format!("mid{i}.bin"), data);
    }
    put_file(&store, "small.txt", b"still here");
    let disk = SmallDisk::new("64M");
    let cache = disk.path().join("cache");
    let mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        &cache,
        &["--fetcher", "native", "--cache-min-free", "0"],
    );

    // Larger than the whole disk: ENOSPC at once, logged with the numbers.
    let err = fs::read(mount.path().join("too-big.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        mount.log().contains("larger than the cache filesystem"),
        "{}",
        mount.log()
    );

    // Three 20 MiB files on 64 MiB: the third fits only after evicting the first.
    for (i, data) in mid.iter().enumerate() {
        assert!(fs::read(mount.path().join(format!("mid{i}.bin"))).unwrap() == *data);
    }
    assert!(entries(&cache).len() <= 3);

    // The disk fills up behind adlsfs's back: a download fails cleanly with ENOSPC.
    let filler = disk.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .output();
    let mut hold = Vec::new();
    for i in 0..3 {
        // Keep the cached files open so eviction cannot free space.
        if let Ok(f) = fs::File::open(mount.path().join(format!("mid{i}.bin"))) {
            hold.push(f);
        }
    }
    fs::remove_dir_all(cache.join("v1/devstoreaccount1").join(&container)).ok();
    let err = fs::read(mount.path().join("mid0.bin")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "{err}\n{}",
        mount.log()
    );
    assert_eq!(temporaries(&cache), 0, "the partial download was removed");

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
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    for i in 0..3 {
        put_file(&store, &format!("g{i}.bin"), &pattern(2 << 20, 50 + i));
    }
    let cache = tempfile::tempdir().unwrap();
    {
        let mount = Mount::start(
            &azurite,
            &format!("adls://devstoreaccount1/{container}"),
            cache.path(),
            &[],
        );
        for i in 0..3 {
            fs::read(mount.path().join(format!("g{i}.bin"))).unwrap();
        }
    }
    assert_eq!(entries(cache.path()).len(), 3);
    let gc = cache_cli(&["gc", "--cache-size", "5M"], cache.path());
    assert!(gc.status.success());
    assert_eq!(
        entries(cache.path()).len(),
        2,
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    let gc = cache_cli(&["gc", "--cache-size", "0"], cache.path());
    assert!(String::from_utf8_lossy(&gc.stdout).contains("evicted 2 entries"));
    assert!(entries(cache.path()).is_empty());
    let bad = cache_cli(&["stats"], Path::new("/nonexistent-cache"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an adlsfs cache directory"));
}

#[test]
fn a_cache_directory_deleted_or_made_read_only_while_mounted_recovers() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let files: Vec<Vec<u8>> = (0..3).map(|i| pattern(2 << 20, 80 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        put_file(&store, &format!("n{i}.bin"), data);
    }
    let disk = SmallDisk::new("64M");
    let cache = disk.path().join("cache");
    let mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        &cache,
        &["--fetcher", "native"],
    );
    let mut held = fs::File::open(mount.path().join("n0.bin")).unwrap();

    // Read-only: opens that need the cache fail clearly, open files keep working.
    let remount = |mode: &str| {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(disk.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    fs::remove_dir_all(&cache).unwrap();
    assert!(fs::read(mount.path().join("n2.bin")).unwrap() == files[2]);
    assert!(cache.join("v1").is_dir());
}
