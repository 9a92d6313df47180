//! Real mounts through /dev/fuse against a real Azurite, checked with plain file I/O,
//! `ls` and `getfattr`: what only a mounted filesystem can show.

mod common;

use adlsfs::digest::xxh3_128;
use adlsfs::metrics::{CACHE_MISSES, FETCH_FAILURES, VERIFICATION_FAILURES};
use adlsfs::storage::{BlobStore, Metadata};
use common::fixture::Fixture;
use common::{pattern, wait_until, walk};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn getfattr(args: &[&str], path: &Path) -> String {
    let out = Command::new("getfattr")
        .args(args)
        .arg(path)
        .output()
        .expect("getfattr (package attr)");
    assert!(
        out.status.success(),
        "getfattr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Raw digests printed with -e text are not UTF-8.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn errno_of(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn tree_bytes_and_digests_match_the_uploaded_fixtures() {
    let fx = Fixture::start();
    let big = pattern(256 << 20, 11);
    let mut fixtures: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    fixtures.insert("hello.txt".into(), b"hello world\n".to_vec());
    fixtures.insert("empty".into(), Vec::new());
    fixtures.insert("dir/a.csv".into(), b"id,v\n1,2\n".to_vec());
    fixtures.insert("dir/sub dir/ünï #1.bin".into(), pattern(3 << 20, 5));
    for (name, data) in &fixtures {
        fx.put(name, data);
    }
    fx.upload("big/blob.bin", &big);
    fixtures.insert("big/blob.bin".into(), big);

    let mount = fx.mount(&[]);
    let root = mount.path();

    let expected: BTreeMap<String, u64> = fixtures
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    assert_eq!(
        walk(&root),
        expected,
        "tree and sizes come from the listing"
    );
    assert_eq!(
        mount.metrics().get(CACHE_MISSES),
        0.0,
        "listing downloads nothing"
    );
    assert!(fx.cached().is_empty(), "listing downloads nothing");

    for (name, data) in &fixtures {
        let got = fs::read(root.join(name)).unwrap();
        assert!(got == *data, "bytes of {name} differ");
    }
    assert_eq!(
        fx.cached().len(),
        fixtures.len(),
        "each file read is cached (so the check above looks in the right place)"
    );
    // mmap reads the same bytes as read().
    let file = fs::File::open(root.join("dir/sub dir/ünï #1.bin")).unwrap();
    let len = 3 << 20;
    let mapped = unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        let copy = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        copy
    };
    assert!(mapped == fixtures["dir/sub dir/ünï #1.bin"]);

    let b64 = xxh3_128(b"hello world\n").to_base64();
    let one = getfattr(
        &["-n", "user.hash.xxh3_128", "-e", "base64"],
        &root.join("hello.txt"),
    );
    assert!(
        one.contains(&format!("user.hash.xxh3_128=0s{b64}")),
        "{one}"
    );
    let all = getfattr(&["-d", "-e", "text"], &root.join("dir/a.csv"));
    assert!(
        all.contains(&format!("user.adls.uri=\"{}\"", fx.uri("dir/a.csv"))),
        "{all}"
    );
    assert!(all.contains("user.adls.etag=\"\\\"0x"), "{all}");
    let md5 = getfattr(
        &["-n", "user.hash.md5", "-e", "base64"],
        &root.join("hello.txt"),
    );
    assert!(
        md5.contains("user.hash.md5=0sb1kCrCNwJL3QwXbLkwY9xA=="),
        "{md5}"
    );
    // Names a file never has are ENODATA (what `ls -l` asks every file for), never ENOSYS.
    let path = std::ffi::CString::new(root.join("hello.txt").into_os_string().into_vec()).unwrap();
    for name in [
        "security.selinux",
        "system.posix_acl_access",
        "user.hash.sha256",
        "trusted.x",
    ] {
        let cname = std::ffi::CString::new(name).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: NUL-terminated strings and a live buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((n, errno), (-1, Some(libc::ENODATA)), "{name}");
    }

    let ls = Command::new("ls")
        .arg("-l")
        .arg(root.join("dir"))
        .output()
        .unwrap();
    let ls = String::from_utf8(ls.stdout).unwrap();
    assert!(
        ls.contains(" 9 ") && ls.contains("a.csv") && ls.contains("sub dir"),
        "{ls}"
    );
    assert!(
        mount.log().contains("passthrough=true"),
        "passthrough expected on this kernel:\n{}",
        mount.log()
    );
}

#[test]
fn a_wrong_digest_found_after_reads_began_fails_every_later_read_and_the_close() {
    let fx = Fixture::start();
    let data = pattern(32 << 20, 1);
    fx.put_claiming("bad.bin", &data, b"other bytes");
    // One 1 MiB range at a time: the whole-file verdict comes long after the first range.
    let mount = fx.mount(&["--native-parallelism", "1", "--native-chunk-size", "1M"]);
    let mut file = fs::File::open(mount.path().join("bad.bin")).unwrap();
    let mut head = vec![0u8; 64 << 10];
    file.read_exact(&mut head).unwrap();
    assert!(
        head == data[..head.len()],
        "the head is served while the file arrives"
    );
    wait_until("the final check to fail", || {
        mount.metrics().failures("corrupt") == 1.0
    });
    file.seek(std::io::SeekFrom::Start(20 << 20)).unwrap();
    let err = file.read(&mut head).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The head, read before the verdict and kept in the page cache, is dropped from it:
    // reading it again reaches the daemon and fails too.
    wait_until("the head's cached pages to be dropped", || {
        std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).is_err()
    });
    assert_eq!(
        common::close_errno(file),
        libc::EIO,
        "close() reports the failure"
    );
    let metrics = mount.metrics();
    // Bytes were served: no second download, whose bytes might differ from those.
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 1.0, "{metrics}");
    let log = mount.log();
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("bad.bin") && l.contains("mismatch"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line names the blob and the cause: {log}"
    );
    assert_eq!(fx.cached_blobs(), Vec::<String>::new());
    assert_eq!(fx.temporaries(), 0, "temporary left behind");
}

#[test]
fn in_whole_file_mode_a_wrong_digest_fails_with_eio_and_caches_nothing() {
    let fx = Fixture::start();
    fx.put_claiming("bad.bin", &pattern(100_000, 1), b"other bytes");
    fx.put("good.bin", b"good");
    let mount = fx.mount(&["--verify-before-read"]);

    let err = fs::read(mount.path().join("bad.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let metrics = mount.metrics();
    // Downloaded twice (a flip in transit would have passed the second time), refused twice.
    assert_eq!(metrics.get(VERIFICATION_FAILURES), 2.0, "{metrics}");
    assert_eq!(metrics.failures("corrupt"), 1.0, "{metrics}");
    assert_eq!(metrics.total(FETCH_FAILURES), 1.0, "{metrics}");
    // The log line names the blob.
    assert!(
        mount
            .log()
            .lines()
            .any(|l| l.contains("bad.bin") && l.contains("mismatch")),
        "{}",
        mount.log()
    );
    assert_eq!(fx.cached_blobs(), Vec::<String>::new());
    assert_eq!(fx.temporaries(), 0, "temporary left behind");
    // The mount keeps serving everything else.
    assert_eq!(fs::read(mount.path().join("good.bin")).unwrap(), b"good");
    assert_eq!(fx.cached_blobs(), ["good.bin"]);
}

#[test]
fn sixteen_cold_readers_cause_one_download() {
    let fx = Fixture::builder().request_log().start();
    let data = pattern(40 << 20, 2);
    fx.upload("shared.bin", &data);
    fx.upload("alone.bin", &data);
    // Native, so the count is of adlsfs's own ranged GETs (azcopy has its own test).
    let mount = fx.mount(&["--fetcher", "native"]);

    // The baseline: what one cold reader costs.
    assert_eq!(
        fs::read(mount.path().join("alone.bin")).unwrap().len(),
        data.len()
    );
    let single = fx.blob_gets("alone.bin");
    assert!(single >= 1);

    let path = mount.path().join("shared.bin");
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || xxh3_128(&fs::read(path).unwrap()))
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), xxh3_128(&data));
    }
    assert_eq!(
        fx.blob_gets("shared.bin"),
        single,
        "16 readers, one download"
    );
}

#[test]
fn ls_of_another_directory_returns_while_a_large_download_runs() {
    let fx = Fixture::start();
    fx.upload("slow/big.bin", &pattern(192 << 20, 4));
    for i in 0..20 {
        fx.put(&format!("other/f{i}"), b"x");
    }
    // One 1 MiB range at a time makes the download take seconds on loopback.
    let mount = fx.mount(&["--native-parallelism", "1", "--native-chunk-size", "1M"]);
    let big = mount.path().join("slow/big.bin");
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        fs::read(big).unwrap();
        start.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let names = fs::read_dir(mount.path().join("other")).unwrap().count();
    let ls_time = start.elapsed();
    assert_eq!(names, 20);
    assert!(
        !reader.is_finished(),
        "the download finished too fast to prove anything"
    );
    let open_time = reader.join().unwrap();
    assert!(
        ls_time < Duration::from_millis(2500),
        "ls took {ls_time:?} while a download ran"
    );
    assert!(
        open_time > ls_time * 2,
        "open {open_time:?} vs ls {ls_time:?}"
    );
}

#[test]
fn every_mutation_fails_with_erofs() {
    let fx = Fixture::start();
    fx.put("f.txt", b"data");
    fx.put("d/g.txt", b"data");
    let mount = fx.mount(&[]);
    let root = mount.path();
    let f = root.join("f.txt");
    assert_eq!(errno_of(fs::write(root.join("new.txt"), b"x")), libc::EROFS);
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(&f)),
        libc::EROFS
    );
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).truncate(true).open(&f)),
        libc::EROFS
    );
    assert_eq!(errno_of(fs::create_dir(root.join("newdir"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(&f)), libc::EROFS);
    assert_eq!(errno_of(fs::remove_dir_all(root.join("d"))), libc::EROFS);
    assert_eq!(errno_of(fs::rename(&f, root.join("g.txt"))), libc::EROFS);
    assert_eq!(
        errno_of(fs::set_permissions(
            &f,
            std::os::unix::fs::PermissionsExt::from_mode(0o777)
        )),
        libc::EROFS
    );
    let setfattr = Command::new("setfattr")
        .args(["-n", "user.x", "-v", "1"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!setfattr.status.success());
    assert!(
        String::from_utf8_lossy(&setfattr.stderr).contains("Read-only"),
        "{setfattr:?}"
    );
    assert_eq!(fs::read(&f).unwrap(), b"data", "reads still work");
}

#[test]
fn remount_reuses_the_cache_without_downloading_again() {
    let fx = Fixture::builder().request_log().start();
    let data = pattern(20 << 20, 9);
    fx.upload("model.bin", &data);

    let mut first = fx.mount(&[]);
    assert!(fs::read(first.path().join("model.bin")).unwrap() == data);
    let gets = fx.blob_gets("model.bin");
    assert!(gets > 0);
    assert!(first.stop().success(), "adlsfs exits 0 on SIGTERM");
    assert!(
        !common::mount::is_mounted(&first.path()),
        "SIGTERM unmounts"
    );

    let second = fx.mount(&[]);
    assert!(fs::read(second.path().join("model.bin")).unwrap() == data);
    assert_eq!(fx.blob_gets("model.bin"), gets, "served from the cache");
    assert_eq!(
        second.metrics().get(CACHE_MISSES),
        0.0,
        "served from the cache"
    );
}

#[test]
fn adls_gen2_directory_markers_show_as_directories_childless_ones_included() {
    let fx = Fixture::start();
    // As Hadoop/ABFS, Storage Explorer and azcopy write directories.
    let folder = Metadata::from([("hdi_isfolder".to_string(), "true".to_string())]);
    fx.put_meta("lake/empty", b"", &folder);
    fx.put_meta("lake/full", b"", &folder);
    fx.put("lake/full/part-0.parquet", b"rows");
    fx.put("lake/zero-length-file", b"");
    let mount = fx.mount(&[]);
    let lake = mount.path().join("lake");
    let empty = fs::metadata(lake.join("empty")).unwrap();
    assert!(
        empty.is_dir(),
        "a childless marker is a directory: {empty:?}"
    );
    assert_eq!(fs::read_dir(lake.join("empty")).unwrap().count(), 0);
    assert!(fs::metadata(lake.join("full")).unwrap().is_dir());
    assert_eq!(fs::read(lake.join("full/part-0.parquet")).unwrap(), b"rows");
    assert!(fs::metadata(lake.join("zero-length-file"))
        .unwrap()
        .is_file());
    let ls = std::process::Command::new("ls")
        .arg("-l")
        .arg(&lake)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    let kinds: Vec<(char, &str)> = listing
        .lines()
        .filter_map(|l| Some((l.chars().next()?, l.split_whitespace().last()?)))
        .filter(|(_, name)| !name.is_empty() && *name != "0")
        .collect();
    assert_eq!(
        kinds,
        [('d', "empty"), ('d', "full"), ('-', "zero-length-file")],
        "{listing}"
    );
}

#[test]
fn odd_blob_names_are_hidden_and_never_break_a_listing() {
    let fx = Fixture::start();
    let long = "l".repeat(256);
    for name in [
        "d/ok.txt",
        "d//empty-segment",
        &format!("d/{long}"),
        "c/a",
        "c/a/inner",
    ] {
        fx.put(name, b"x");
    }
    let mount = fx.mount(&[]);
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&mount.path().join("d")), ["ok.txt"]);
    assert_eq!(names(&mount.path().join("c")), ["a"]);
    assert!(
        mount.path().join("c/a").is_dir(),
        "the directory shadows the file"
    );
    assert_eq!(fs::read(mount.path().join("c/a/inner")).unwrap(), b"x");
    let log = mount.log();
    assert!(
        log.contains("blob=d// ") && log.contains("empty path segment"),
        "{log}"
    );
    assert!(log.contains("longer than 255 bytes"), "{log}");
}

#[test]
fn unmount_with_fusermount_ends_the_daemon() {
    let fx = Fixture::start();
    fx.put("f", b"1");
    let mut mount = fx.mount(&[]);
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(status.success());
    // The daemon notices and exits by itself (a zombie until reaped by stop()).
    let stat = format!("/proc/{}/stat", mount.pid());
    common::wait_until("the daemon to exit", || {
        std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "))
    });
    assert!(mount.stop().success());
    assert!(!common::mount::is_mounted(&mount.path()));
    let log = mount.log();
    assert!(log.contains("unmounted externally"), "{log}");
    assert!(
        !log.contains("WARN") && !log.contains("Failed to umount"),
        "a clean unmount from outside is not a warning: {log}"
    );
}

#[test]
fn blobs_without_an_xxh3_digest_verify_by_md5_or_length_or_are_refused() {
    let fx = Fixture::start();
    // Put Blob: the service records Content-MD5, but there is no xxh3 metadata.
    let small = b"no xxh3 here\n".to_vec();
    fx.put_raw("md5-only.txt", &small);
    // A block upload has neither digest.
    let big = pattern(12 << 20, 8);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &big).unwrap();
    let meta = fx
        .block_on(fx.store.put_file("bare.bin", tmp.path(), &Metadata::new()))
        .unwrap();
    assert_eq!(
        (meta.content_md5, meta.xxh3().unwrap()),
        (None, None),
        "fixture has no digest"
    );

    {
        let mount = fx.mount(&[]);
        assert_eq!(fs::read(mount.path().join("md5-only.txt")).unwrap(), small);
        assert!(fs::read(mount.path().join("bare.bin")).unwrap() == big);
        // The xxh3 xattr of a blob without one is computed from the verified download.
        let attr = getfattr(
            &["-n", "user.hash.xxh3_128", "-e", "base64"],
            &mount.path().join("bare.bin"),
        );
        assert!(
            attr.contains(&format!("=0s{}", xxh3_128(&big).to_base64())),
            "{attr}"
        );
        let listed = getfattr(&["-d", "-m", "-"], &mount.path().join("bare.bin"));
        assert!(
            !listed.contains("user.hash.md5"),
            "no md5 to show: {listed}"
        );
        let log = mount.log();
        assert!(
            log.contains("verified_by=\"md5\"") && log.contains("verified_by=\"length\""),
            "{log}"
        );
    }
    let strict_cache = tempfile::tempdir().unwrap();
    let strict = fx.mount_on(strict_cache.path(), &["--require-digest"], &[]);
    assert_eq!(fs::read(strict.path().join("md5-only.txt")).unwrap(), small);
    let err = fs::read(strict.path().join("bare.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(strict.log().contains("require-digest"), "{}", strict.log());
}
