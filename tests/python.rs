//! The Python package (`python/`) against a real mount: Azurite, blobs with and without the
//! xxh3 digest, a mount through /dev/fuse, then the package's pytest suite run from the
//! project venv with the real thds-core and thds-adls wheels (`scripts/pyadlsfs` installs
//! them and the package). The test fails when the venv cannot be set up or pytest fails.

mod common;

use adlsfs::storage::credentials::{EMULATOR_ACCOUNT, EMULATOR_KEY};
use common::fixture::Fixture;
use common::{adlsfs_bin, pattern};
use std::path::Path;
use std::process::Command;

#[test]
fn python_package_tests_pass_against_a_real_mount() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = Command::new("bash")
        .arg(repo.join("scripts/pyadlsfs"))
        .output()
        .expect("running scripts/pyadlsfs");
    assert!(
        setup.status.success(),
        "scripts/pyadlsfs failed:\n{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let venv = String::from_utf8(setup.stdout).unwrap().trim().to_string();

    let fx = Fixture::start();
    let mut blobs: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| (format!("many/f{i:04}"), format!("file {i}\n").into_bytes()))
        .collect();
    blobs.push(("data/a.csv".into(), b"id,value\n1,a\n2,b\n".to_vec()));
    blobs.push(("data/b.csv".into(), pattern(300_000, 7)));
    blobs.push(("data/with space é.csv".into(), b"id\n3\n".to_vec()));
    fx.put_all(&blobs);
    fx.put_raw("raw/nodigest.bin", &pattern(200_000, 11));
    let mount = fx.mount(&["--fetcher", "native"]);
    // The Azure Python SDK does not read `DevelopmentStorageProxyUri`: name the endpoint.
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName={EMULATOR_ACCOUNT};AccountKey={EMULATOR_KEY};BlobEndpoint={};",
        fx.azurite.endpoint()
    );

    let out = Command::new(Path::new(&venv).join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo.join("python/tests"))
        .env("ADLSFS_TEST_MOUNT", mount.path())
        .env("ADLSFS_TEST_LOCATION", fx.location())
        .env("ADLSFS_BIN", adlsfs_bin())
        .env("AZURE_STORAGE_CONNECTION_STRING", connection_string)
        .output()
        .expect("running pytest");
    assert!(
        out.status.success(),
        "pytest failed:\n{}\n{}\nmount log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mount.log()
    );
}
