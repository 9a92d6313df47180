//! What a pod needs: prefetch into the node cache, mount(8) and fstab, daemonising,
//! metrics and stats, draining on SIGTERM, JSON logs.

mod common;

use adlsfs::metrics::{
    CACHE_HITS, CACHE_MISSES, FETCHED_BYTES, FETCHES, FETCHES_IN_FLIGHT, FETCH_FAILURES,
    VERIFICATION_FAILURES,
};
use common::fixture::{Fixture, SLOW_NATIVE};
use common::mount::{is_mounted, Metrics};
use common::{adlsfs_bin, pattern, stderr, wait_until};
use std::io::{Read, Write};
use std::process::Command;

#[test]
fn prefetch_warms_the_cache_so_a_mount_downloads_nothing() {
    let fx = Fixture::start();
    let files: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("data/f{i:03}.bin"), pattern(10_000 + i, i as u64)))
        .collect();
    fx.put_all(&files);
    fx.put("other/skip.bin", b"x");
    let out = fx.prefetch(&["data"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("100 files") && err.contains("100 downloaded, 0 already cached, 0 failed"),
        "{err}"
    );
    assert!(
        !fx.cached_blobs().contains(&"other/skip.bin".to_string()),
        "only the selection is prefetched"
    );

    let mount = fx.mount(&[]);
    for (name, data) in &files {
        assert!(
            std::fs::read(mount.path().join(name)).unwrap() == *data,
            "{name}"
        );
    }
    let metrics = mount.metrics();
    assert_eq!(metrics.get(CACHE_MISSES), 0.0, "{metrics}");
    assert_eq!(metrics.get(CACHE_HITS), 100.0, "{metrics}");

    // Prefetching again finds everything cached.
    let again = fx.prefetch(&["data/**/*.bin"]);
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert!(
        err.contains("0 downloaded, 100 already cached, 0 failed"),
        "{err}"
    );
}

#[test]
fn prefetch_names_each_failure_and_exits_non_zero() {
    let fx = Fixture::start();
    fx.put("good.bin", b"good");
    fx.put_claiming("corrupt.bin", b"actual", b"claimed");
    let out = fx.prefetch(&[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("FAILED {}", fx.uri("corrupt.bin"))) && err.contains("mismatch"),
        "{err}"
    );
    assert!(
        err.contains("1 downloaded, 0 already cached, 1 failed"),
        "{err}"
    );
    assert_eq!(fx.cached_blobs(), ["good.bin"]);
    let missing = fx.prefetch(&["no/such/dir"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no/such/dir: no file, directory or glob match"));
}

/// mount(8) runs helpers with a fixed root PATH: the binary under test is installed into
/// /usr/local/bin by `scripts/install`, as the README tells users to, for the test's
/// duration; whatever was there before is put back afterwards.
struct Installed {
    target: std::path::PathBuf,
    previous: Option<Vec<u8>>,
}

impl Installed {
    fn new() -> Self {
        let target = std::path::PathBuf::from("/usr/local/bin/adlsfs");
        let previous = std::fs::read(&target).ok();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install");
        let run = || {
            Command::new("bash")
                .arg(script)
                .arg("--binary")
                .arg(adlsfs_bin())
                .output()
                .unwrap()
        };
        let out = run();
        assert!(out.status.success(), "scripts/install: {}", stderr(&out));
        assert_eq!(
            std::fs::read(&target).unwrap(),
            std::fs::read(adlsfs_bin()).unwrap()
        );
        let again = run();
        assert!(
            again.status.success() && stderr(&again).contains("up to date"),
            "installing again changes nothing: {}",
            stderr(&again)
        );
        Self { target, previous }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = match &self.previous {
            Some(bytes) => std::fs::write(&self.target, bytes),
            None => std::fs::remove_file(&self.target),
        };
    }
}

#[test]
fn mount_t_fuse_adlsfs_and_an_fstab_entry_mount_and_unmount() {
    let fx = Fixture::start();
    fx.put("hello.txt", b"hello world\n");
    let _installed = Installed::new();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let cache = work.path().join("cache");
    std::fs::create_dir(&mnt).unwrap();
    // fstab-style: credentials from a private file named in the options.
    let creds = fx.credentials_file(work.path());
    let source = fx.location();
    let opts = format!(
        "cache_dir={},credentials_file={},metadata_ttl=5s,allow_other,nosuid,nodev",
        cache.display(),
        creds.display()
    );

    let out = Command::new("mount")
        .args(["-t", "fuse.adlsfs", &source])
        .arg(&mnt)
        .args(["-o", &opts])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.adlsfs: {}",
        stderr(&out)
    );
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("the daemon to let go of the mountpoint", || {
        !is_mounted(&mnt)
    });

    let fstab = work.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{source} {} fuse.adlsfs {opts},_netdev,noauto 0 0\n",
            mnt.display()
        ),
    )
    .unwrap();
    let out = Command::new("mount")
        .arg("--fstab")
        .arg(&fstab)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount from fstab: {}", stderr(&out));
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("unmount", || !is_mounted(&mnt));
}

#[test]
fn a_daemonised_mount_reports_its_outcome_through_the_exit_status() {
    let fx = Fixture::start();
    fx.put("f", b"1");
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = work.path().join("adlsfs.log");
    let location = fx.location();
    let args = |loc: &str| -> Vec<String> {
        vec![
            "mount".into(),
            loc.into(),
            mnt.display().to_string(),
            "--cache-dir".into(),
            work.path().join("cache").display().to_string(),
            "--log-file".into(),
            log.display().to_string(),
            "--log-format".into(),
            "json".into(),
            "--log-level".into(),
            "info".into(),
        ]
    };
    let a = args(&location);
    let out = fx.command().args(&a).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(is_mounted(&mnt), "mounted when the command returns");
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"1");
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    wait_until("the daemon to log its exit", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("unmounted")
    });
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(lines.lines().count() > 1, "{lines}");
    for line in lines.lines() {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            json["level"].is_string() && json["fields"].is_object(),
            "{line}"
        );
    }

    let b = args(&format!(
        "adls://devstoreaccount1/no-such-container-{}",
        std::process::id()
    ));
    let failed = fx.command().args(&b).output().unwrap();
    assert!(!failed.status.success());
    assert!(stderr(&failed).contains("not found"), "{}", stderr(&failed));
    assert!(!is_mounted(&mnt));
}

#[test]
fn sigterm_during_a_download_unmounts_cleanly_and_leaves_no_temporary() {
    let fx = Fixture::start();
    fx.upload("big.bin", &pattern(160 << 20, 5));
    let mut mount = fx.mount(&[&SLOW_NATIVE[..], &["--drain-timeout", "500ms"]].concat());
    let path = mount.path().join("big.bin");
    let reader = std::thread::spawn(move || {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut Vec::new()))
    });
    wait_until("the download to start", || fx.temporaries() > 0);
    let status = mount.stop();
    assert!(status.success(), "exit status {status}\n{}", mount.log());
    assert!(!is_mounted(&mount.path()));
    assert!(
        reader.join().unwrap().is_err(),
        "the interrupted read fails"
    );
    assert_eq!(fx.temporaries(), 0, "no temporary left");
    assert!(mount.log().contains("draining"), "{}", mount.log());
}

#[test]
fn metrics_endpoint_and_stats_count_what_happens() {
    let fx = Fixture::start();
    let data = pattern(3 << 20, 8);
    fx.put("m.bin", &data);
    fx.put_claiming("bad.bin", b"x", b"y");
    let addr = format!("127.0.0.1:{}", common::free_port());
    // Whole-file mode, so the bad blob's refusals are counted before its read returns.
    let mount = fx.mount(&[
        "--metrics-addr",
        &addr,
        "--fetcher",
        "native",
        "--verify-before-read",
    ]);
    let scrape = || {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        Metrics(text)
    };
    let before = scrape();
    assert_eq!(before.get(CACHE_MISSES), 0.0, "{before}");
    std::fs::read(mount.path().join("m.bin")).unwrap();
    std::fs::read(mount.path().join("m.bin")).unwrap();
    assert!(std::fs::read(mount.path().join("bad.bin")).is_err());
    let after = scrape();
    assert_eq!(after.get(CACHE_MISSES), 2.0, "{after}");
    assert_eq!(after.get(CACHE_HITS), 1.0, "{after}");
    assert_eq!(after.fetcher(FETCHED_BYTES, "native"), data.len() as f64);
    assert_eq!(after.fetcher(FETCHES, "native"), 1.0);
    // The bad blob was downloaded twice and refused twice, then failed once.
    assert_eq!(after.get(VERIFICATION_FAILURES), 2.0);
    assert_eq!(after.failures("corrupt"), 1.0, "{after}");
    assert_eq!(
        after.total(FETCH_FAILURES),
        1.0,
        "one failure of any kind: {after}"
    );
    assert_eq!(after.get(FETCHES_IN_FLIGHT), 0.0);
    let via_socket = mount.metrics();
    assert_eq!(via_socket.get(CACHE_HITS), 1.0, "{via_socket}");
}
