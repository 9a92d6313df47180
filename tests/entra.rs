//! Entra ID end to end, as on AKS: Azurite in OAuth mode over HTTPS with a private CA, a
//! token service on loopback, and adlsfs configured by the variables each flow's platform
//! sets. Each flow lists, mounts, reads, gives digests as xattrs and prefetches, and the
//! token service sees that flow's grant and no other; tokens that are missing or expired
//! are refused, so the passing tests show the tokens are what let adlsfs in.

mod common;

use adlsfs::metrics::FETCHES;
use common::entra::{Flow, Lifetime};
use common::fixture::Fixture;
use common::{pattern, stderr, stdout};
use std::process::Command;

const BLOB: &str = "dir/data.bin";

/// The fixture with two blobs in it, `top.txt` and [`BLOB`] (300 kB), both with digests.
fn fixture(flow: Flow) -> (Fixture, Vec<u8>) {
    let fx = Fixture::builder().entra(flow).start();
    let data = pattern(300_000, 13);
    fx.put(BLOB, &data);
    fx.put("top.txt", b"hello entra\n");
    (fx, data)
}

/// `getfattr`'s line for `user.hash.xxh3_128`, the value in base64 after `0s`.
fn xxh3_xattr(path: &std::path::Path) -> String {
    let out = Command::new("getfattr")
        .args(["-n", "user.hash.xxh3_128", "-e", "base64"])
        .arg(path)
        .output()
        .expect("getfattr (package attr)");
    assert!(out.status.success(), "getfattr: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("user.hash.xxh3_128="));
    line.unwrap_or_else(|| panic!("no xxh3 in {text}"))
        .to_string()
}

/// `adlsfs ls`, a mount's read and xattr, and `adlsfs prefetch`, all with `flow` alone.
fn lists_mounts_reads_and_prefetches(flow: Flow) {
    let (fx, data) = fixture(flow);

    let ls = stdout(&fx.cli(&["ls", "-R", &fx.location()]));
    assert!(ls.contains("data.bin") && ls.contains("top.txt"), "{ls}");

    let prefetched = fx.prefetch(&["top.txt"]);
    assert!(prefetched.status.success(), "{}", stderr(&prefetched));
    assert_eq!(fx.cached_blobs(), ["top.txt"]);

    let mount = fx.mount(&["--fetcher", "native"]);
    let file = mount.path().join(BLOB);
    assert_eq!(
        xxh3_xattr(&file),
        format!("0s{}", adlsfs::digest::xxh3_128(&data).to_base64())
    );
    assert!(std::fs::read(&file).unwrap() == data, "bytes differ");
    assert_eq!(fx.cached_blobs(), [BLOB, "top.txt"]);
    let log = mount.log();
    drop(mount);

    let service = fx.token_service();
    service.grants().assert_only(flow);
    for text in [&log, &ls, &stderr(&prefetched)] {
        service.assert_no_secret_in(text);
    }
}

#[test]
fn managed_identity_imds_lists_mounts_reads_and_prefetches() {
    lists_mounts_reads_and_prefetches(Flow::ManagedIdentity);
}

#[test]
fn managed_identity_app_service_lists_mounts_reads_and_prefetches() {
    lists_mounts_reads_and_prefetches(Flow::AppService);
}

#[test]
fn workload_identity_with_the_webhooks_authority_host_lists_mounts_reads_and_prefetches() {
    lists_mounts_reads_and_prefetches(Flow::WorkloadIdentity);
}

#[test]
fn client_secret_with_an_authority_host_lists_mounts_reads_and_prefetches() {
    lists_mounts_reads_and_prefetches(Flow::ClientSecret);
}

#[test]
fn azure_cli_lists_mounts_reads_and_prefetches() {
    lists_mounts_reads_and_prefetches(Flow::AzureCli);
}

/// The azcopy fetcher, given a user-delegation SAS minted with `flow`'s token (object_store's
/// signer asks Azurite for a user-delegation key with the bearer token); azcopy trusts the
/// test CA through the same `SSL_CERT_FILE`.
fn azcopy_fetches_with(flow: Flow) {
    let (fx, data) = fixture(flow);
    let mount = fx.mount(&["--fetcher", "azcopy", "--azcopy-min-size", "100K"]);
    let read = std::fs::read(mount.path().join(BLOB)).unwrap();
    assert!(read == data, "bytes differ:\n{}", mount.log());
    assert_eq!(
        mount.settled_metrics().fetcher(FETCHES, "azcopy"),
        1.0,
        "{}",
        mount.log()
    );
    let log = mount.log();
    drop(mount);
    assert!(
        !log.contains("azcopy logs in itself"),
        "azcopy was not given a SAS:\n{log}"
    );
    let service = fx.token_service();
    service.grants().assert_only(flow);
    service.assert_no_secret_in(&log);
}

#[test]
fn azcopy_fetches_with_managed_identity() {
    azcopy_fetches_with(Flow::ManagedIdentity);
}

#[test]
fn azcopy_fetches_with_app_service_managed_identity() {
    azcopy_fetches_with(Flow::AppService);
}

#[test]
fn azcopy_fetches_with_workload_identity() {
    azcopy_fetches_with(Flow::WorkloadIdentity);
}

#[test]
fn azcopy_fetches_with_a_client_secret() {
    azcopy_fetches_with(Flow::ClientSecret);
}

#[test]
fn azcopy_fetches_with_the_azure_cli() {
    azcopy_fetches_with(Flow::AzureCli);
}

#[test]
fn azurite_refuses_requests_without_a_token_or_with_an_expired_one() {
    let fx = Fixture::builder()
        .entra_tokens(Flow::ClientSecret, Lifetime::expired())
        .start();
    fx.put("top.txt", b"hello entra\n");
    let args = ["ls", "--retry-timeout", "1s", &fx.location()];

    let expired = fx.cli(&args);
    assert!(!expired.status.success(), "an expired token was accepted");
    let grants = fx.token_service().grants();
    assert!(
        grants.client_secret >= 1,
        "no token was asked for: {grants:?}"
    );
    assert!(stderr(&expired).contains("403"), "{}", stderr(&expired));

    let anonymous = fx.cli(&[&args[..], &["--anonymous"]].concat());
    assert!(
        !anonymous.status.success(),
        "an unsigned listing was accepted"
    );
    assert!(stderr(&anonymous).contains("403"), "{}", stderr(&anonymous));
}

#[test]
fn the_private_ca_is_trusted_only_through_ssl_cert_file() {
    let (fx, _) = fixture(Flow::ClientSecret);
    let args = ["ls", "--retry-timeout", "1s", &fx.location()];
    let out = fx.command().env_remove("SSL_CERT_FILE").args(args).output();
    let out = out.expect("running adlsfs");
    assert!(
        !out.status.success(),
        "a private CA was trusted without SSL_CERT_FILE"
    );
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    stdout(&fx.cli(&args));
}

/// A token endpoint that refuses connections: the one error names the credential kind,
/// the endpoint and the variables to check, once.
#[test]
fn an_unreachable_token_endpoint_is_named_with_what_to_check_once() {
    let (fx, _) = fixture(Flow::ManagedIdentity);
    let closed = format!("https://127.0.0.1:{}/msi/token", common::free_port());
    let started = std::time::Instant::now();
    let out = fx
        .command()
        .env("AZURE_MSI_ENDPOINT", &closed)
        .args(["ls", &fx.location(), "--retry-timeout", "2s"])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    for wanted in [
        "managed identity",
        closed.as_str(),
        "AZURE_MSI_ENDPOINT",
        "NO_PROXY",
    ] {
        assert!(err.contains(wanted), "{wanted:?} missing from: {err}");
    }
    assert_eq!(err.matches(closed.as_str()).count(), 1, "said once: {err}");
}

/// A token endpoint that refuses the credential: the error names the credential kind, the
/// endpoint, the service's answer and the variables to check.
#[test]
fn a_refused_client_secret_is_named_with_the_answer_and_what_to_check() {
    let (fx, _) = fixture(Flow::ClientSecret);
    let out = fx
        .command()
        .env("AZURE_CLIENT_SECRET", "not-the-secret")
        .args(["ls", &fx.location(), "--retry-timeout", "2s"])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert!(!out.status.success(), "{err}");
    for wanted in [
        "client secret",
        "/oauth2/v2.0/token",
        "400",
        "AZURE_CLIENT_SECRET",
    ] {
        assert!(err.contains(wanted), "{wanted:?} missing from: {err}");
    }
    assert!(
        !err.contains("not-the-secret"),
        "the secret was printed: {err}"
    );
    assert_eq!(
        err.matches("could not get an Entra ID token").count(),
        1,
        "said once: {err}"
    );
}
