//! What a pod needs: prefetch into the node cache, mount(8) and fstab, daemonising,
//! metrics and stats, draining on SIGTERM, JSON logs.

mod common;

use adlsfs::metrics::sample;
use adlsfs::storage::BlobStore;
use bytes::Bytes;
use common::mount::{is_mounted, Mount};
use common::{adlsfs_bin, pattern, rt, with_digest, Azurite};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn adlsfs(azurite: &Azurite, args: &[&str]) -> Output {
    Command::new(adlsfs_bin())
        .args(args)
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azurite.connection_string(),
        )
        .output()
        .unwrap()
}

fn stats(mountpoint: &Path) -> String {
    let out = Command::new(adlsfs_bin())
        .arg("stats")
        .arg(mountpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn prefetch_warms_the_cache_so_a_mount_downloads_nothing() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let rt = rt();
    for i in 0..100 {
        let data = pattern(10_000 + i, i as u64);
        rt.block_on(store.put(
            &format!("data/f{i:03}.bin"),
            Bytes::from(data.clone()),
            &with_digest(&data),
        ))
        .unwrap();
    }
    rt.block_on(store.put(
        "other/skip.bin",
        Bytes::from_static(b"x"),
        &with_digest(b"x"),
    ))
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    let out = adlsfs(
        &azurite,
        &[
            "prefetch",
            &location,
            "data",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("100 files") && err.contains("100 downloaded") && err.contains("0 failed"),
        "{err}"
    );

    let mount = Mount::start(&azurite, &location, cache.path(), &[]);
    for i in 0..100 {
        let got = std::fs::read(mount.path().join(format!("data/f{i:03}.bin"))).unwrap();
        assert_eq!(got, pattern(10_000 + i, i as u64));
    }
    let text = stats(&mount.path());
    assert_eq!(
        sample(&text, "adlsfs_cache_misses_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "adlsfs_cache_hits_total"),
        Some(100.0),
        "{text}"
    );

    // Prefetching again finds everything cached.
    let again = adlsfs(
        &azurite,
        &[
            "prefetch",
            &location,
            "data/**/*.bin",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("100 already cached"));
}

#[test]
fn prefetch_names_each_failure_and_exits_non_zero() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let rt = rt();
    rt.block_on(store.put(
        "good.bin",
        Bytes::from_static(b"good"),
        &with_digest(b"good"),
    ))
    .unwrap();
    rt.block_on(store.put(
        "corrupt.bin",
        Bytes::from_static(b"actual"),
        &with_digest(b"claimed"),
    ))
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    let out = adlsfs(
        &azurite,
        &[
            "prefetch",
            &location,
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "FAILED adls://devstoreaccount1/{container}/corrupt.bin"
        )) && err.contains("mismatch"),
        "{err}"
    );
    assert!(
        err.contains("1 downloaded") && err.contains("1 failed"),
        "{err}"
    );
    let missing = adlsfs(
        &azurite,
        &[
            "prefetch",
            &location,
            "no/such/dir",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("no/such/dir: no file, directory or glob match"));
}

/// mount(8) runs helpers with a fixed root PATH, so the binary under test is linked
/// into /usr/local/sbin for the test's duration (and only where nothing else is).
struct InstalledLink(std::path::PathBuf);

impl InstalledLink {
    fn new() -> Self {
        let link = std::path::PathBuf::from("/usr/local/sbin/adlsfs");
        if let Ok(target) = std::fs::read_link(&link) {
            assert_eq!(
                target,
                adlsfs_bin(),
                "{} belongs to another adlsfs",
                link.display()
            );
            return Self(link);
        }
        assert!(
            !link.exists(),
            "{} exists: refusing to replace it",
            link.display()
        );
        std::fs::create_dir_all("/usr/local/sbin").unwrap();
        std::os::unix::fs::symlink(adlsfs_bin(), &link).unwrap();
        Self(link)
    }
}

impl Drop for InstalledLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn mount_t_fuse_adlsfs_and_an_fstab_entry_mount_and_unmount() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    rt().block_on(store.put(
        "hello.txt",
        Bytes::from_static(b"hello world\n"),
        &with_digest(b"hello world\n"),
    ))
    .unwrap();
    let _link = InstalledLink::new();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let cache = work.path().join("cache");
    std::fs::create_dir(&mnt).unwrap();
    // fstab-style: credentials from a private file named in the options.
    let creds = work.path().join("creds");
    std::fs::write(
        &creds,
        format!(
            "AZURE_STORAGE_CONNECTION_STRING={}\n",
            azurite.connection_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let source = format!("adls://devstoreaccount1/{container}");
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
        String::from_utf8_lossy(&out.stderr)
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
    assert!(
        out.status.success(),
        "mount from fstab: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_until("unmount", || !is_mounted(&mnt));
}

#[test]
fn a_daemonised_mount_reports_its_outcome_through_the_exit_status() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    rt().block_on(store.put("f", Bytes::from_static(b"1"), &with_digest(b"1")))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = work.path().join("adlsfs.log");
    let location = format!("adls://devstoreaccount1/{container}");
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
    let out = adlsfs(&azurite, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    for line in std::fs::read_to_string(&log).unwrap().lines() {
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
    let failed = adlsfs(&azurite, &b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn sigterm_during_a_download_unmounts_cleanly_and_leaves_no_temporary() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), pattern(160 << 20, 5)).unwrap();
    rt().block_on(adlsfs::commands::upload::upload_file(
        &store,
        tmp.path(),
        "big.bin",
    ))
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        cache.path(),
        &[
            "--fetcher",
            "native",
            "--native-parallelism",
            "1",
            "--native-chunk-size",
            "1M",
            "--drain-timeout",
            "500ms",
        ],
    );
    let path = mount.path().join("big.bin");
    let reader =
        std::thread::spawn(move || std::fs::File::open(path).map(|mut f| f.read(&mut [0u8; 1])));
    let tmp_dir = cache.path().join("tmp");
    wait_until("the download to start", || {
        std::fs::read_dir(&tmp_dir).map(|d| d.count()).unwrap_or(0) > 0
    });
    let status = mount.stop();
    assert!(status.success(), "exit status {status}\n{}", mount.log());
    assert!(!is_mounted(&mount.path()));
    assert!(
        reader.join().unwrap().is_err(),
        "the interrupted open fails"
    );
    assert_eq!(
        std::fs::read_dir(&tmp_dir).unwrap().count(),
        0,
        "no temporary left"
    );
    assert!(mount.log().contains("draining"), "{}", mount.log());
}

#[test]
fn metrics_endpoint_and_stats_count_what_happens() {
    let azurite = Azurite::start();
    let (container, store) = rt().block_on(azurite.new_container());
    let data = pattern(3 << 20, 8);
    rt().block_on(store.put("m.bin", Bytes::from(data.clone()), &with_digest(&data)))
        .unwrap();
    rt().block_on(store.put("bad.bin", Bytes::from_static(b"x"), &with_digest(b"y")))
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mount = Mount::start(
        &azurite,
        &format!("adls://devstoreaccount1/{container}"),
        cache.path(),
        &["--metrics-addr", &addr, "--fetcher", "native"],
    );
    let scrape = || {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        text
    };
    let before = scrape();
    assert_eq!(sample(&before, "adlsfs_cache_misses_total"), Some(0.0));
    std::fs::read(mount.path().join("m.bin")).unwrap();
    std::fs::read(mount.path().join("m.bin")).unwrap();
    assert!(std::fs::read(mount.path().join("bad.bin")).is_err());
    let after = scrape();
    assert_eq!(
        sample(&after, "adlsfs_cache_misses_total"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "adlsfs_cache_hits_total"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "adlsfs_fetched_bytes_total{fetcher=\"native\"}"),
        Some(data.len() as f64)
    );
    assert_eq!(
        sample(&after, "adlsfs_fetches_total{fetcher=\"native\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "adlsfs_verification_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "adlsfs_fetch_failures_total{kind=\"corrupt\"}"),
        Some(1.0)
    );
    assert_eq!(
        adlsfs::metrics::sum(&after, "adlsfs_fetch_failures_total"),
        1.0
    );
    assert_eq!(sample(&after, "adlsfs_fetches_in_flight"), Some(0.0));
    let via_socket = stats(&mount.path());
    assert_eq!(
        sample(&via_socket, "adlsfs_cache_hits_total"),
        Some(1.0),
        "{via_socket}"
    );
}
