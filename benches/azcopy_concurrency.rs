//! Which AZCOPY_CONCURRENCY_VALUE is fastest here: downloads one blob with the real azcopy
//! at several concurrencies, alternating them round by round (the machine is shared and
//! noisy), and prints the median wall time of each, relative to the best.
//!
//!     cargo bench --bench azcopy_concurrency [-- SIZE_MIB [ROUNDS]]

#[path = "../tests/common/mod.rs"]
mod common;

use adlsfs::digest::XXH3_METADATA_KEY;
use adlsfs::storage::{BlobStore, Metadata, ReadUrlSigner};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONCURRENCIES: [u32; 6] = [2, 4, 8, 16, 32, 64];

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let size_mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let azurite = common::Azurite::start();
    let (_, store) = rt.block_on(azurite.new_container());
    let data = common::pattern(size_mib << 20, 1);
    let digest = adlsfs::digest::xxh3_128(&data);
    let meta = Metadata::from([(XXH3_METADATA_KEY.to_string(), digest.to_base64())]);
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    drop(data);
    rt.block_on(store.put_file("bench.bin", &src, &meta))
        .unwrap();
    std::fs::remove_file(&src).unwrap();
    let url = rt
        .block_on(store.read_url("bench.bin", Duration::from_secs(3600)))
        .unwrap();

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); CONCURRENCIES.len()];
    for round in 0..rounds {
        for (i, cv) in CONCURRENCIES.iter().enumerate() {
            let dest = dir.path().join(format!("out-{round}-{cv}"));
            let start = Instant::now();
            let status = Command::new("azcopy")
                .args(["copy", url.as_str(), dest.to_str().unwrap()])
                .args([
                    "--from-to=BlobLocal",
                    "--check-md5=NoCheck",
                    "--output-type=json",
                ])
                .env("AZCOPY_CONCURRENCY_VALUE", cv.to_string())
                .env("AZCOPY_LOG_LOCATION", dir.path())
                .env("AZCOPY_JOB_PLAN_LOCATION", dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert!(status.success(), "azcopy failed at concurrency {cv}");
            let (got, _) = adlsfs::digest::xxh3_128_file(&dest).unwrap();
            assert_eq!(got, digest, "azcopy wrote wrong bytes");
            std::fs::remove_file(&dest).unwrap();
            times[i].push(secs);
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let best = medians.iter().copied().fold(f64::INFINITY, f64::min);
    println!("azcopy download of {size_mib} MiB from Azurite on loopback, median of {rounds} alternating rounds");
    println!("| AZCOPY_CONCURRENCY_VALUE | median wall (s) | × best |");
    println!("| --- | --- | --- |");
    for (cv, m) in CONCURRENCIES.iter().zip(&medians) {
        println!("| {cv} | {m:.2} | {:.2} |", m / best);
    }
}
