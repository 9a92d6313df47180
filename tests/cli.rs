//! The `adlsfs` binary end to end against Azurite: credentials from the environment and from
//! a credentials file, upload with digests, listing, stat, and clear errors.

mod common;

use common::fixture::Fixture;
use common::{adlsfs_command, stderr, stdout};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

/// `adlsfs <args>` with no credentials but those in `env`.
fn adlsfs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = adlsfs_command();
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("running adlsfs")
}

#[test]
fn upload_then_list_and_stat_with_a_connection_string() {
    // The upload creates the container.
    let fx = Fixture::builder().no_container().start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub dir")).unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello world\n").unwrap();
    std::fs::write(dir.path().join("sub dir/empty"), b"").unwrap();
    let location = fx.uri("data");

    let up = stdout(&fx.cli(&[
        "upload",
        dir.path().to_str().unwrap(),
        &location,
        "--create-container",
    ]));
    assert!(
        up.contains("data/hello.txt  12 bytes  xxh3_128=7vrJ2HEAzRM2suczpUhEJQ=="),
        "{up}"
    );

    let ls = stdout(&fx.cli(&["ls", "-l", "-R", &location]));
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

    let stat = stdout(&fx.cli(&["stat", &format!("{location}/hello.txt")]));
    assert!(
        stat.contains(&format!("uri: {}", fx.uri("data/hello.txt"))),
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
    let fx = Fixture::builder().no_container().start();
    let dir = tempfile::tempdir().unwrap();
    let creds = fx.credentials_file(dir.path());
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    let file = dir.path().join("f");
    let upload = [
        "upload",
        file.to_str().unwrap(),
        &fx.location(),
        "--create-container",
    ];
    let ls = ["ls", &fx.location()];
    // Only the file holds credentials.
    let run = |args: &[&str]| {
        adlsfs_command()
            .args(args)
            .arg("--credentials-file")
            .arg(&creds)
            .output()
            .expect("running adlsfs")
    };

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run(&upload);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("chmod 600"), "{err}");

    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    stdout(&run(&upload));
    assert_eq!(stdout(&run(&ls)).trim(), "f");
}

#[test]
fn bad_inputs_get_clear_errors_and_a_failing_exit_code() {
    let bad = adlsfs(&["ls", "s3://bucket/key"], &[]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
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
    let err = stderr(&unreachable);
    assert!(
        err.contains("could not reach") && err.contains(&port),
        "{err}"
    );
    assert!(
        !err.contains("TOPSECRETSIG"),
        "a SAS must never be printed: {err}"
    );
    assert_eq!(
        err.matches("could not reach").count(),
        1,
        "said once, not as an error and again as a log line: {err}"
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
    let err = stderr(&out);
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
    let err = stderr(&out);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn a_refused_credential_names_the_account_the_container_and_the_role_to_grant() {
    let fx = Fixture::start();
    fx.put("f", b"1");
    // A key of the right shape that is not the account's.
    let wrong_key =
        "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let refused = adlsfs(
        &[
            "ls",
            &fx.location(),
            "--endpoint",
            fx.azurite.endpoint().as_str(),
        ],
        &[("AZURE_STORAGE_ACCOUNT_KEY", wrong_key)],
    );
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(&format!("devstoreaccount1/{}", fx.container)) && err.contains("403"),
        "names the account and container: {err}"
    );
    assert!(
        err.contains("Storage Blob Data Reader"),
        "names the role: {err}"
    );
    assert!(!err.contains(wrong_key), "never the key: {err}");
    assert_eq!(err.matches("was refused").count(), 1, "said once: {err}");
}

#[test]
fn an_expired_sas_says_it_expired_when_and_what_to_do_once() {
    let fx = Fixture::start();
    fx.put("f", b"1");
    let url = fx
        .store
        .container_read_url(std::time::Duration::from_secs(8))
        .unwrap();
    let sas = url.query().unwrap().to_string();
    let sig = url
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .unwrap()
        .1
        .into_owned();
    let expiry = url
        .query_pairs()
        .find(|(k, _)| k == "se")
        .unwrap()
        .1
        .into_owned();
    let endpoint = fx.azurite.endpoint().to_string();
    let args = ["ls", &fx.location(), "--endpoint", endpoint.as_str()];
    let valid = adlsfs(&args, &[("AZURE_STORAGE_SAS_TOKEN", &sas)]);
    assert!(
        valid.status.success(),
        "the SAS works before its expiry: {}",
        stderr(&valid)
    );
    // Past its se= (whole seconds, and Azurite's clock is this one).
    let expires = chrono::DateTime::parse_from_rfc3339(&expiry).unwrap();
    while chrono::Utc::now() <= expires + chrono::Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = adlsfs(&args, &[("AZURE_STORAGE_SAS_TOKEN", &sas)]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains(&format!("expired at {expiry}")) && err.contains("AZURE_STORAGE_SAS_TOKEN"),
        "says when it expired and what to do: {err}"
    );
    assert!(!err.contains(&sig), "never the signature: {err}");
    assert_eq!(err.matches("was refused").count(), 1, "said once: {err}");
}
