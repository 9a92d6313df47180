//! Secrets stay secret, the cache is not world-writable, other users stay out.

mod common;

use adlsfs::metrics::FETCHES;
use adlsfs::storage::credentials::EMULATOR_KEY;
use common::fixture::Fixture;
use common::mount::Mount;
use common::pattern;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

/// An azcopy that records its arguments, then runs the real one.
fn recording_azcopy(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let paths = std::env::var_os("PATH").unwrap();
    let real = std::env::split_paths(&paths)
        .map(|d| d.join("azcopy"))
        .find(|p| p.is_file())
        .expect("azcopy on PATH");
    let record = dir.join("azcopy-args");
    let script = dir.join("azcopy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"$@\" >> {}\nexec {} \"$@\"\n",
            record.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

fn everything_the_daemon_showed(mount: &Mount) -> String {
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", mount.pid())).expect("the daemon is alive");
    format!("{}\n{}", mount.log(), String::from_utf8_lossy(&cmdline))
}

fn assert_no_world_writable(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o002,
                0,
                "{} is world-writable",
                e.path().display()
            );
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn keys_and_sas_tokens_never_show_in_logs_or_command_lines() {
    let fx = Fixture::start();
    let big = pattern(3 << 20, 71);
    fx.put("a.bin", &big);
    // Below --azcopy-min-size: fetched natively.
    let small = pattern(100_000, 72);
    fx.put("b.bin", &small);
    let container_sas = fx
        .store
        .container_read_url(Duration::from_secs(3600))
        .unwrap();
    let sas = container_sas.query().unwrap().to_string();
    let sig = container_sas
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .unwrap()
        .1
        .into_owned();
    let endpoint = fx.azurite.endpoint().to_string();
    let scripts = tempfile::tempdir().unwrap();
    let (azcopy, record) = recording_azcopy(scripts.path());

    for (credential, value, secret) in [
        (
            "AZURE_STORAGE_ACCOUNT_KEY",
            EMULATOR_KEY.to_string(),
            EMULATOR_KEY.to_string(),
        ),
        ("AZURE_STORAGE_SAS_TOKEN", sas.clone(), sig.clone()),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let _ = std::fs::remove_file(&record);
        let mount = fx.mount_on(
            cache.path(),
            &[
                "--endpoint",
                &endpoint,
                "--fetcher",
                "azcopy",
                "--azcopy-min-size",
                "1M",
                "--azcopy-path",
                azcopy.to_str().unwrap(),
                "--log-level",
                "trace",
            ],
            &[
                ("AZURE_STORAGE_CONNECTION_STRING", ""),
                (credential, &value),
                ("RUST_LOG", "trace"),
            ],
        );
        assert!(
            std::fs::read(mount.path().join("a.bin")).unwrap() == big,
            "azcopy path"
        );
        assert!(
            std::fs::read(mount.path().join("b.bin")).unwrap() == small,
            "native path"
        );
        let metrics = mount.settled_metrics();
        let shown = everything_the_daemon_showed(&mount);
        assert!(!shown.contains(&secret), "{credential} leaked:\n{shown}");
        assert_eq!(metrics.fetcher(FETCHES, "azcopy"), 1.0, "{metrics}");
        assert_eq!(metrics.fetcher(FETCHES, "native"), 1.0, "{metrics}");
        assert_no_world_writable(cache.path());

        // azcopy's command line carried a read-only SAS for one blob, or the mount's own SAS.
        let args = std::fs::read_to_string(&record).unwrap();
        let urls: Vec<&str> = args.lines().filter(|l| l.starts_with("http")).collect();
        assert_eq!(urls.len(), 1, "one azcopy job: {args}");
        for url in urls {
            let url = url::Url::parse(url).unwrap();
            let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            if credential == "AZURE_STORAGE_ACCOUNT_KEY" {
                assert_eq!((q["sp"].as_str(), q["sr"].as_str()), ("r", "b"), "{url}");
                let expiry = chrono::DateTime::parse_from_rfc3339(&q["se"]).unwrap();
                let left = expiry.signed_duration_since(chrono::Utc::now());
                assert!(
                    left < chrono::Duration::minutes(30),
                    "a short-lived SAS: {left}"
                );
                assert!(url.path().ends_with(".bin"), "one blob: {url}");
            } else {
                assert_eq!(q["sig"], sig, "the mount's own SAS, as documented");
            }
        }
    }
}

#[test]
fn without_allow_other_another_user_cannot_read_the_mount() {
    let fx = Fixture::start();
    fx.put("private.txt", b"mine");
    let mount = fx.mount(&[]);
    let file = mount.path().join("private.txt");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    // The parent tempdir is 0700: open it up so only FUSE's own check stands in the way.
    std::fs::set_permissions(
        mount.path().parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = unsafe {
        std::process::Command::new("cat")
            .arg(&file)
            .pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .output()
            .unwrap()
    };
    assert!(!out.status.success(), "another user read the mount");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}
