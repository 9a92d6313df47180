//! The `adlsfs` binary end to end against Azurite: credentials from the environment and from
//! a credentials file, upload with digests, listing, stat, and clear errors.

mod common;

use common::{adlsfs_bin, Azurite};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn adlsfs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(adlsfs_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running adlsfs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "adlsfs failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn upload_then_list_and_stat_with_a_connection_string() {
    let azurite = Azurite::start();
    let cs = azurite.connection_string();
    let env = [("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub dir")).unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello world\n").unwrap();
    std::fs::write(dir.path().join("sub dir/empty"), b"").unwrap();
    let container = common::unique_container_name();
    let location = format!("adls://devstoreaccount1/{container}/data");

    let up = adlsfs(
        &[
            "upload",
            dir.path().to_str().unwrap(),
            &location,
            "--create-container",
        ],
        &env,
    );
    let up = stdout(&up);
    assert!(
        up.contains("data/hello.txt  12 bytes  xxh3_128=7vrJ2HEAzRM2suczpUhEJQ=="),
        "{up}"
    );

    let ls = stdout(&adlsfs(&["ls", "-l", "-R", &location], &env));
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    assert!(
        lines[0].trim_start().starts_with("12 ")
            && lines[0].contains("hello.txt  xxh3_128=7vrJ2HEAzRM2suczpUhEJQ=="),
        "{ls}"
    );
    assert!(lines[1].ends_with("sub dir/"), "{ls}");
    assert!(
        lines[2].contains("sub dir/empty  xxh3_128=maoG0wFHmNhgAcMkRo1Jfw=="),
        "{ls}"
    );

    let stat = stdout(&adlsfs(&["stat", &format!("{location}/hello.txt")], &env));
    assert!(
        stat.contains(&format!(
            "uri: adls://devstoreaccount1/{container}/data/hello.txt"
        )),
        "{stat}"
    );
    assert!(
        stat.contains("content-md5: b1kCrCNwJL3QwXbLkwY9xA=="),
        "{stat}"
    );
    assert!(
        stat.contains("metadata.hash_xxh3_128_b64: 7vrJ2HEAzRM2suczpUhEJQ=="),
        "{stat}"
    );
}

#[test]
fn credentials_file_is_used_only_when_private() {
    let azurite = Azurite::start();
    let container = common::unique_container_name();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::write(
        &creds,
        format!(
            "AZURE_STORAGE_CONNECTION_STRING={}\n",
            azurite.connection_string()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    let location = format!("adls://devstoreaccount1/{container}");
    let args = |cmd: &'static str| -> Vec<String> {
        let mut v = vec![cmd.to_string()];
        if cmd == "upload" {
            v.push(dir.path().join("f").to_str().unwrap().to_string());
        }
        v.extend([
            location.clone(),
            "--credentials-file".into(),
            creds.to_str().unwrap().into(),
        ]);
        if cmd == "upload" {
            v.push("--create-container".into());
        }
        v
    };
    let run = |cmd| {
        let a = args(cmd);
        adlsfs(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run("upload");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("chmod 600"), "{err}");

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    stdout(&run("upload"));
    assert_eq!(stdout(&run("ls")).trim(), "f");
}

#[test]
fn bad_inputs_get_clear_errors_and_a_failing_exit_code() {
    let bad = adlsfs(&["ls", "s3://bucket/key"], &[]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("accepted forms") && err.contains("adls://<account>/<container>"),
        "{err}"
    );

    let port = common::free_port().to_string();
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let unreachable = adlsfs(
        &[
            "ls",
            "adls://devstoreaccount1/box",
            "--endpoint",
            &endpoint,
            "--retry-timeout",
            "1s",
        ],
        &[("AZURE_STORAGE_SAS_TOKEN", "sv=2023-11-03&sig=TOPSECRETSIG")],
    );
    assert!(!unreachable.status.success());
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        err.contains("could not reach") && err.contains(&port),
        "{err}"
    );
    assert!(
        !err.contains("TOPSECRETSIG"),
        "a SAS must never be printed: {err}"
    );
}

#[test]
fn mount_refuses_a_missing_or_non_empty_mountpoint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = adlsfs(
        &[
            "mount",
            "adls://devstoreaccount1/box",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");

    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let out = adlsfs(
        &[
            "mount",
            "adls://devstoreaccount1/box",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
}
