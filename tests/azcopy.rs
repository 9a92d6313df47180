//! The azcopy fetcher with the real azcopy against Azurite, plus fake azcopy scripts for
//! what the real one cannot be made to do on cue (fail, hang, report its environment).

mod common;

use adlsfs::cache::layout::EntryKey;
use adlsfs::digest::xxh3_128;
use adlsfs::fetch::azcopy::{AzcopyConfig, AzcopyError, AzcopyFetcher, AzcopyUse};
use adlsfs::fetch::landed::Landed;
use adlsfs::fetch::native::{NativeConfig, NativeFetcher};
use adlsfs::fetch::select::{FetcherMode, SelectingFetcher};
use adlsfs::fetch::sizing::AzcopyEnv;
use adlsfs::fetch::{
    FetchError, FetchJob, FetchReport, Fetcher, FetcherKind, NoProgress, ProgressSink,
};
use adlsfs::metrics::Metrics;
use adlsfs::storage::azure::AzureStore;
use adlsfs::storage::BlobMeta;
use common::fixture::Fixture;
use common::pattern;
use fs2::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env() -> AzcopyEnv {
    AzcopyEnv {
        concurrency: "8".into(),
        buffer_gb: "0.5".into(),
        concurrency_source: "test",
        buffer_source: "test",
    }
}

fn azcopy_binary() -> PathBuf {
    let paths = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&paths)
        .map(|d| d.join("azcopy"))
        .find(|p| p.is_file())
        .expect("azcopy not on PATH: run scripts/setup")
}

fn fetcher(
    store: &Arc<AzureStore>,
    binary: PathBuf,
    cache_root: &Path,
    stall: Duration,
) -> Arc<AzcopyFetcher> {
    Arc::new(AzcopyFetcher::new(
        AzcopyConfig {
            binary,
            cache_root: cache_root.to_path_buf(),
            env: env(),
            stall_timeout: stall,
        },
        store.clone(),
    ))
}

fn key(meta: &BlobMeta) -> EntryKey {
    EntryKey {
        account: "devstoreaccount1".into(),
        container: "c".into(),
        blob: meta.name.clone(),
        etag: meta.etag.clone(),
    }
}

/// One fetch of `meta` into `dest` (an existing file) with `fetcher`, progress to `progress`.
async fn fetch_into(
    fetcher: &dyn Fetcher,
    meta: &BlobMeta,
    dest: &Path,
    progress: &dyn ProgressSink,
) -> Result<FetchReport, FetchError> {
    let landed = std::sync::Arc::new(Landed::new(meta.size));
    let job = FetchJob {
        meta,
        dest,
        progress,
        landed: &landed,
        hash_md5: false,
        early: None,
    };
    let report = fetcher.fetch(&job).await;
    if report.is_ok() {
        assert!(
            landed.is_complete(),
            "a fetch that succeeded landed every byte"
        );
    }
    report
}

fn fetches(metrics: &Metrics, kind: FetcherKind) -> u64 {
    metrics
        .fetcher(kind)
        .fetches
        .load(std::sync::atomic::Ordering::SeqCst)
}

fn files_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A fake azcopy: a shell script with the given body.
fn fake_azcopy(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("azcopy");
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn real_azcopy_materialises_a_verified_file_and_leaves_nothing_behind() {
    let fx = Fixture::start();
    let store = &fx.store;
    let data = pattern(24 << 20, 3);
    let meta = fx.put("dir/odd name+%#.bin", &data);
    fx.block_on(async {
        let cache_dir = fx.cache();
        let azcopy = fetcher(store, azcopy_binary(), &cache_dir, Duration::from_secs(60));
        let metrics = Arc::new(Metrics::default());
        let pipeline = fx.pipeline(azcopy, &metrics);

        let cached = pipeline.ensure(&key(&meta), &meta).await.unwrap();
        assert_eq!(fetches(&metrics, FetcherKind::Azcopy), 1);
        assert!(std::fs::read(&cached.path).unwrap() == data);
        assert_eq!(cached.xxh3, Some(xxh3_128(&data)));
        assert!(
            files_under(&cache_dir.join("tmp")).is_empty(),
            "no .azDownload or temporaries"
        );
        assert!(
            files_under(&cache_dir.join("azcopy/plans")).is_empty(),
            "plan files removed"
        );
        assert!(
            files_under(&cache_dir.join("azcopy/logs")).is_empty(),
            "logs of a good job removed"
        );
    });
}

#[test]
fn auto_goes_native_while_the_node_lock_is_held_and_azcopy_mode_waits_for_it() {
    let fx = Fixture::start();
    let store = &fx.store;
    let meta = fx.put("big.bin", &pattern(8 << 20, 1));
    fx.block_on(async {
        let cache_dir = fx.cache();
        std::fs::create_dir_all(cache_dir.join("locks")).unwrap();
        let native = Arc::new(NativeFetcher::new(store.clone(), NativeConfig::default()));
        let azcopy = fetcher(store, azcopy_binary(), &cache_dir, Duration::from_secs(60));
        let dest = &cache_dir.join("dest");

        // Another process's azcopy job holds the node lock.
        let lock = std::fs::File::create(cache_dir.join("locks/azcopy.lock")).unwrap();
        lock.lock_exclusive().unwrap();

        let auto = SelectingFetcher::new(
            FetcherMode::Auto,
            native.clone(),
            Some(azcopy.clone()),
            Some(1 << 20),
        );
        std::fs::write(dest, b"").unwrap();
        let start = Instant::now();
        assert_eq!(
            fetch_into(&auto, &meta, dest, &NoProgress)
                .await
                .unwrap()
                .fetcher,
            FetcherKind::Native
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "auto must not queue behind azcopy"
        );

        let forced = Arc::new(SelectingFetcher::new(
            FetcherMode::Azcopy,
            native,
            Some(azcopy),
            Some(1 << 20),
        ));
        std::fs::write(dest, b"").unwrap();
        let (m, d, f) = (meta.clone(), dest.clone(), forced.clone());
        let waiting =
            tokio::spawn(async move { fetch_into(f.as_ref(), &m, &d, &NoProgress).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !waiting.is_finished(),
            "azcopy mode waits for the node lock"
        );
        drop(lock);
        assert_eq!(waiting.await.unwrap().unwrap().fetcher, FetcherKind::Azcopy);
        assert_eq!(std::fs::metadata(dest).unwrap().len(), meta.size);
    });
}

#[test]
fn a_failing_or_missing_azcopy_falls_back_to_native() {
    let fx = Fixture::start();
    let store = &fx.store;
    let data = pattern(3 << 20, 2);
    // One blob per azcopy, each fetched afresh into the fixture's one cache.
    let failing_meta = fx.put("failing.bin", &data);
    let missing_meta = fx.put("missing.bin", &data);
    let cache_dir = fx.cache();
    fx.block_on(async {
        let scripts = tempfile::tempdir().unwrap();
        let tried = scripts.path().join("tried");
        let failing = fake_azcopy(
            scripts.path(),
            &format!(
                r#"echo run >> {}; echo '{{"MessageType":"Error","MessageContent":"RESPONSE 403: AuthorizationFailure sig=SECRET"}}'; exit 1"#,
                tried.display()
            ),
        );
        let native = Arc::new(NativeFetcher::new(store.clone(), NativeConfig::default()));
        let missing = scripts.path().join("missing-azcopy");
        for (binary, meta) in [(failing.clone(), failing_meta), (missing, missing_meta)] {
            let azcopy = fetcher(
                store,
                binary.clone(),
                &cache_dir,
                Duration::from_secs(60),
            );
            let direct = azcopy
                .fetch_under_node_lock(
                    &meta,
                    &cache_dir.join("x"),
                    AzcopyUse::Wait,
                    &NoProgress,
                )
                .await
                .unwrap_err();
            assert!(
                !direct.to_string().contains("SECRET"),
                "SAS leaked: {direct}"
            );
            if binary == failing {
                assert!(matches!(direct, AzcopyError::Failed { .. }), "{direct}");
                std::fs::remove_file(&tried).unwrap();
            } else {
                assert!(matches!(direct, AzcopyError::Spawn { .. }), "{direct}");
            }
            let select =
                SelectingFetcher::new(FetcherMode::Azcopy, native.clone(), Some(azcopy), Some(0));
            let metrics = Arc::new(Metrics::default());
            let pipeline = fx.pipeline(Arc::new(select), &metrics);
            let cached = pipeline.ensure(&key(&meta), &meta).await.unwrap();
            assert!(std::fs::read(&cached.path).unwrap() == data);
            if binary == failing {
                assert!(
                    tried.exists(),
                    "the pipeline ran azcopy before falling back"
                );
            }
            assert_eq!(
                (
                    fetches(&metrics, FetcherKind::Native),
                    fetches(&metrics, FetcherKind::Azcopy)
                ),
                (1, 0),
                "native served the file after azcopy failed"
            );
        }
    });
}

/// One run of a fake azcopy through the node lock, on a 1 MiB blob.
struct FakeRun {
    err: AzcopyError,
    /// What the script wrote to the note file it was given.
    note: String,
    dest: PathBuf,
    cache: PathBuf,
    took: Duration,
}

/// Runs the fake azcopy `script(note)` (`note`: a file it may write) once, with `stall`
/// as the stall timeout; it must fail.
fn run_fake_azcopy(script: impl FnOnce(&Path) -> String, stall: Duration) -> FakeRun {
    let fx = Fixture::start();
    let meta = fx.put("f.bin", &pattern(1 << 20, 2));
    let scripts = tempfile::tempdir().unwrap();
    let note = scripts.path().join("note");
    let fake = fake_azcopy(scripts.path(), &script(&note));
    let cache = fx.cache();
    let azcopy = fetcher(&fx.store, fake, &cache, stall);
    let dest = cache.join("tmp-dest");
    let start = Instant::now();
    let err = fx
        .block_on(azcopy.fetch_under_node_lock(&meta, &dest, AzcopyUse::Wait, &NoProgress))
        .unwrap_err();
    let took = start.elapsed();
    let note = std::fs::read_to_string(&note).unwrap();
    FakeRun {
        err,
        note,
        dest,
        cache,
        took,
    }
}

#[test]
fn a_hung_azcopy_is_killed_after_the_stall_timeout() {
    // Like azcopy retrying an unreachable endpoint: ignores SIGTERM, never progresses.
    let run = run_fake_azcopy(
        |pid_file| {
            let pid_file = pid_file.display();
            format!("trap '' TERM; echo $$ > {pid_file}; while true; do sleep 1; done")
        },
        Duration::from_secs(1),
    );
    assert!(matches!(run.err, AzcopyError::Stalled(_)), "{}", run.err);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
    let pid: i32 = run.note.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the hung azcopy must be gone"
    );
}

#[test]
fn invocation_environment_and_stdin_follow_the_design() {
    let run = run_fake_azcopy(
        |record| {
            format!(
                r#"{{ printf '%s\n' "$@"; env | grep '^AZCOPY_' | sort
                   if read -t 0.5 line; then echo stdin=data; elif [ $? -gt 128 ]; then echo stdin=open; else echo stdin=eof; fi
                }} > {}; exit 3"#,
                record.display()
            )
        },
        Duration::from_secs(30),
    );
    let seen = &run.note;
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "copy");
    assert!(
        lines[1].contains("/f.bin?") && lines[1].contains("sp=r") && lines[1].contains("sig="),
        "{seen}"
    );
    assert_eq!(lines[2], run.dest.to_str().unwrap());
    for flag in [
        "--from-to=BlobLocal",
        "--check-md5=NoCheck",
        "--output-type=json",
    ] {
        assert!(lines.contains(&flag), "{flag} missing: {seen}");
    }
    assert!(
        seen.contains("AZCOPY_CONCURRENCY_VALUE=8\n") && seen.contains("AZCOPY_BUFFER_GB=0.5\n"),
        "{seen}"
    );
    let logs = run.cache.join("azcopy/logs");
    assert!(
        seen.contains(&format!("AZCOPY_LOG_LOCATION={}\n", logs.display())),
        "{seen}"
    );
    let plans = run.cache.join("azcopy/plans");
    assert!(
        seen.contains(&format!("AZCOPY_JOB_PLAN_LOCATION={}\n", plans.display())),
        "{seen}"
    );
    assert!(
        seen.contains("stdin=open"),
        "stdin must be a pipe held open: {seen}"
    );
}

#[test]
fn mount_sizes_azcopy_from_the_cgroup_and_honours_the_users_setting() {
    let fx = Fixture::start();
    fx.put("big.bin", &pattern(6 << 20, 5));
    let cgroup = tempfile::tempdir().unwrap();
    std::fs::write(cgroup.path().join("cpu.max"), "300000 100000\n").unwrap();
    std::fs::write(cgroup.path().join("memory.max"), "2147483648\n").unwrap();
    let cgroup_arg = cgroup.path().to_str().unwrap();
    let args = [
        "--fetcher",
        "azcopy",
        "--azcopy-min-size",
        "1M",
        "--cgroup-root",
        cgroup_arg,
    ];

    let mount = fx.mount(&args);
    let data = std::fs::read(mount.path().join("big.bin")).unwrap();
    assert_eq!(xxh3_128(&data), xxh3_128(&pattern(6 << 20, 5)));
    let log = mount.log();
    assert!(
        log.contains("concurrency=12 concurrency_from=\"limits\" buffer_gb=0.50"),
        "{log}"
    );
    assert!(log.contains("fetcher=\"azcopy\""), "{log}");
    drop(mount);

    let mount = fx.mount_with_env(&args, &[("AZCOPY_CONCURRENCY", "5")]);
    let log = mount.log();
    assert!(
        log.contains("concurrency=5 concurrency_from=\"AZCOPY_CONCURRENCY\""),
        "{log}"
    );
}

/// Records progress reports and checks they only grow and end at the total.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(u64, u64)>>);

impl ProgressSink for Recorder {
    fn progress(&self, _blob: &str, done: u64, total: u64) {
        self.0.lock().unwrap().push((done, total));
    }
}

impl Recorder {
    fn assert_complete(&self, size: u64) {
        let seen = self.0.lock().unwrap();
        assert!(!seen.is_empty(), "no progress reported");
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "progress went backwards: {seen:?}"
        );
        assert_eq!(*seen.last().unwrap(), (size, size), "{seen:?}");
    }
}

#[test]
fn native_progress_reaches_the_total() {
    let fx = Fixture::start();
    let store = &fx.store;
    let meta = fx.put("p.bin", &pattern(5 << 20, 9));
    fx.block_on(async {
        let native = NativeFetcher::new(
            store.clone(),
            NativeConfig {
                chunk_size: 1 << 20,
                parallelism: 3,
                ..NativeConfig::default()
            },
        );
        let dest = fx.cache().join("p");
        std::fs::write(&dest, b"").unwrap();
        let recorder = Recorder::default();
        fetch_into(&native, &meta, &dest, &recorder).await.unwrap();
        assert_eq!(recorder.0.lock().unwrap().len(), 5, "one report per chunk");
        recorder.assert_complete(meta.size);
    });
}

/// (start, end) of each azcopy job in a mount's log, as RFC 3339 strings that sort in time.
fn job_intervals(log: &str) -> Vec<(String, String)> {
    let stamp = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
    let starts: Vec<String> = log
        .lines()
        .filter(|l| l.contains("azcopy job started"))
        .map(stamp)
        .collect();
    let ends: Vec<String> = log
        .lines()
        .filter(|l| l.contains("azcopy job finished"))
        .map(stamp)
        .collect();
    assert_eq!(starts.len(), ends.len(), "{log}");
    starts.into_iter().zip(ends).collect()
}

#[test]
fn a_64_mib_file_goes_through_exactly_one_azcopy_job_when_auto_has_a_threshold() {
    let fx = Fixture::start();
    let data = pattern(64 << 20, 31);
    fx.put("model.bin", &data);
    let mount = fx.mount(&["--azcopy-min-size", "20M"]);
    let got = std::fs::read(mount.path().join("model.bin")).unwrap();
    assert_eq!(xxh3_128(&got), xxh3_128(&data));
    let log = mount.log();
    assert_eq!(job_intervals(&log).len(), 1, "{log}");
    assert!(
        log.contains("status=\"Completed\"") && log.contains("fetcher=\"azcopy\""),
        "{log}"
    );
}

#[test]
fn azcopy_jobs_from_two_processes_never_overlap() {
    let fx = Fixture::start();
    fx.put("a.bin", &pattern(48 << 20, 32));
    fx.put("b.bin", &pattern(48 << 20, 33));
    // Two processes sharing the fixture's cache.
    let args = ["--fetcher", "azcopy"];
    let one = fx.mount(&args);
    let two = fx.mount(&args);
    let (pa, pb) = (one.path().join("a.bin"), two.path().join("b.bin"));
    let a = std::thread::spawn(move || std::fs::read(pa).unwrap().len());
    let b = std::thread::spawn(move || std::fs::read(pb).unwrap().len());
    assert_eq!((a.join().unwrap(), b.join().unwrap()), (48 << 20, 48 << 20));
    let mut jobs = job_intervals(&one.log());
    jobs.extend(job_intervals(&two.log()));
    assert_eq!(jobs.len(), 2, "one job per file");
    jobs.sort();
    assert!(jobs[0].1 <= jobs[1].0, "azcopy jobs overlapped: {jobs:?}");
}

#[test]
fn auto_is_native_first_without_a_threshold() {
    let fx = Fixture::start();
    fx.put("model.bin", &pattern(24 << 20, 34));
    let mount = fx.mount(&[]);
    std::fs::read(mount.path().join("model.bin")).unwrap();
    mount.settled_metrics();
    let log = mount.log();
    // azcopy was there to be used: auto chose native all the same.
    assert!(log.contains("azcopy fetcher ready"), "{log}");
    let stats = std::process::Command::new(common::adlsfs_bin())
        .arg("stats")
        .arg(mount.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stats.stdout);
    let sample = |name| adlsfs::metrics::sample(&text, name);
    assert_eq!(
        sample("adlsfs_fetches_total{fetcher=\"native\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample("adlsfs_fetches_total{fetcher=\"azcopy\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(!log.contains("azcopy job started"), "{log}");
}
