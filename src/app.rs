//! Wiring for the long-running commands: runtime, storage, cache, materialisation
//! pipeline, filesystem core, FUSE session, metrics endpoints and signals. Mount and
//! prefetch build their store, cache and pipeline with the same [`Pipeline::build`].

use crate::cache::Cache;
use crate::config::{CacheConfig, FetchConfig, MountConfig, StorageConfig};
use crate::fetch::azcopy::{AzcopyConfig, AzcopyFetcher};
use crate::fetch::native::NativeFetcher;
use crate::fetch::select::{FetcherMode, SelectingFetcher};
use crate::fetch::{sizing, Fetcher, ProgressSink};
use crate::fs::AdlsFs;
use crate::fuse::session;
use crate::fuse::FuseAdapter;
use crate::location::Location;
use crate::materialise::Materialiser;
use crate::metrics::Metrics;
use crate::storage::azure::AzureStore;
use crate::storage::BlobStore;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the main loop checks whether the session ended from outside.
const SESSION_POLL: Duration = Duration::from_millis(200);

/// Tells the process that started a daemonised mount how the mount went.
pub trait ReadyNotifier {
    fn ready(self: Box<Self>);
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("adlsfs-worker")
        .build()
        .context("starting the async runtime")
}

/// The store, the node cache and the pipeline that fills it, wired the one way both
/// `mount` and `prefetch` use.
pub struct Pipeline {
    pub store: Arc<AzureStore>,
    pub cache: Arc<Cache>,
    pub materialiser: Arc<Materialiser>,
    pub metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Opens the cache and builds the fetchers and pipeline over `store`; progress goes to
    /// `progress` when given.
    pub fn build(
        store: Arc<AzureStore>,
        cache: &CacheConfig,
        fetch: &FetchConfig,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let cache_store = Arc::new(
            Cache::open_bounded(&cache.dir, cache.bounds)
                .context("opening the cache directory")?
                .with_metrics(Arc::clone(&metrics)),
        );
        let fetcher = build_fetcher(fetch, &cache.dir, Arc::clone(&store));
        let mut materialiser = Materialiser::new(Arc::clone(&cache_store), fetcher, fetch.verify)
            .with_metrics(Arc::clone(&metrics));
        if let Some(progress) = progress {
            materialiser = materialiser.with_progress(progress);
        }
        Ok(Self {
            store,
            cache: cache_store,
            materialiser: Arc::new(materialiser),
            metrics,
        })
    }
}

/// Resolves credentials and connects to `location`'s container.
pub fn connect(storage: &StorageConfig, location: &Location) -> Result<Arc<AzureStore>> {
    Ok(Arc::new(storage.connect(location)?))
}

/// Mounts, serves until unmounted or signalled, then drains and unmounts. `ready` is
/// called once the mount is live (a daemonised parent then exits 0).
pub fn run_mount(config: MountConfig, ready: Option<Box<dyn ReadyNotifier>>) -> Result<()> {
    let mountpoint = config.session.mountpoint.clone();
    // Check the mountpoint before anything slow, so the error is immediate.
    session::check_mountpoint(&mountpoint)?;
    let runtime = runtime()?;
    let store = connect(&config.storage, &config.location)?;
    // Fail at mount time, not at first access, when the location is wrong or unreadable.
    runtime
        .block_on(store.list_dir(&config.location.dir_prefix()))
        .with_context(|| format!("checking access to {}", config.location))?;
    let pipeline = Pipeline::build(store, &config.cache, &config.fetch, None)?;
    let fs = Arc::new(AdlsFs::new(
        config.location.clone(),
        pipeline.store.clone(),
        Arc::clone(&pipeline.materialiser),
        config.fs.clone(),
    ));
    let _servers = runtime.block_on(start_metrics_servers(
        &pipeline.metrics,
        config.metrics_addr,
        &mountpoint,
    ))?;
    let adapter = FuseAdapter::new(fs, runtime.handle().clone(), config.fs.metadata_ttl);
    let mounted = session::mount(adapter, &config.session)?;
    tracing::info!(location = %config.location, mountpoint = %mountpoint.display(), "mounted");
    eprintln!(
        "adlsfs: mounted {} at {}",
        config.location,
        mountpoint.display()
    );
    if let Some(ready) = ready {
        ready.ready();
    }

    let materialiser = &pipeline.materialiser;
    let signal = runtime.block_on(wait_for_end(&mounted))?;
    match signal {
        Some(name) => {
            tracing::info!(
                signal = name,
                in_flight = materialiser.in_flight(),
                "draining, then unmounting"
            );
            runtime.block_on(drain(materialiser, config.drain_timeout));
        }
        None => tracing::info!("unmounted externally"),
    }
    mounted.unmount().context("unmounting")?;
    // Downloads cut short by the unmount must leave nothing behind.
    runtime.shutdown_timeout(Duration::from_secs(5));
    pipeline.cache.remove_own_temporaries();
    tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
    eprintln!("adlsfs: unmounted {}", mountpoint.display());
    Ok(())
}

/// Lets downloads in progress finish, for at most `timeout`.
async fn drain(materialiser: &Materialiser, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while materialiser.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if materialiser.in_flight() > 0 {
        tracing::warn!(
            in_flight = materialiser.in_flight(),
            "drain timeout: abandoning downloads in progress"
        );
        // Their opens fail with EIO, so nothing holds the unmount up.
        materialiser.cancel_downloads();
        let grace = Instant::now() + Duration::from_secs(2);
        while materialiser.in_flight() > 0 && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits for SIGINT or SIGTERM (returning its name), or for the session to end by itself.
async fn wait_for_end(mounted: &session::Mounted) -> Result<Option<&'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Some("SIGTERM")),
            _ = int.recv() => return Ok(Some("SIGINT")),
            _ = tokio::time::sleep(SESSION_POLL) => {
                if mounted.is_finished() {
                    return Ok(None);
                }
            }
        }
    }
}

/// The local socket `adlsfs stats <mountpoint>` reads a mount's counters from.
pub fn stats_socket(mountpoint: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let id = crate::digest::xxh3_128(canonical.as_os_str().as_encoded_bytes());
    let hex = crate::cache::layout::hex(&id.as_bytes()[..8]);
    // SAFETY: geteuid has no preconditions.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/run/adlsfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("adlsfs"))
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("adlsfs-{}", unsafe { libc::geteuid() }))
            })
    };
    dir.join(format!("{hex}.sock"))
}

/// Removes its socket file when the mount ends.
pub struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the counters on the stats socket, and over HTTP at `addr` when given.
async fn start_metrics_servers(
    metrics: &Arc<Metrics>,
    addr: Option<std::net::SocketAddr>,
    mountpoint: &Path,
) -> Result<SocketGuard> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = stats_socket(mountpoint);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let m = Arc::clone(metrics);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = unix.accept().await {
            let _ = conn.write_all(m.render().as_bytes()).await;
        }
    });
    if let Some(addr) = addr {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for metrics"))?;
        tracing::info!(%addr, "serving metrics at /metrics");
        let m = Arc::clone(metrics);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = tcp.accept().await {
                let m = Arc::clone(&m);
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let n = conn.read(&mut request).await.unwrap_or(0);
                    let wanted = request[..n].starts_with(b"GET /metrics ");
                    let (status, body) = if wanted {
                        ("200 OK", m.render())
                    } else {
                        ("404 Not Found", "only GET /metrics is served\n".to_string())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
    }
    Ok(SocketGuard(socket))
}

/// The native fetcher, plus azcopy when the mode may use it and a binary is found.
pub fn build_fetcher(
    config: &FetchConfig,
    cache_dir: &Path,
    store: Arc<AzureStore>,
) -> Arc<dyn Fetcher> {
    let mut native = config.native;
    // On plain HTTP nothing but the range MD5 protects a byte served before the whole
    // file is verified.
    if !store.is_https() && !config.verify.before_read {
        native.check_ranges = true;
    }
    tracing::debug!(check_ranges = native.check_ranges, "native fetcher ready");
    let native = Arc::new(NativeFetcher::new(store.clone(), native));
    let azcopy = match config.mode {
        FetcherMode::Native => None,
        FetcherMode::Auto | FetcherMode::Azcopy => {
            match find_azcopy(config.azcopy_path.as_deref()) {
                Some(binary) => {
                    let limits = sizing::read_limits(&config.cgroup_root);
                    let env = sizing::azcopy_env(&limits, |k| std::env::var(k).ok());
                    tracing::info!(
                        binary = %binary.display(),
                        concurrency = %env.concurrency,
                        concurrency_from = env.concurrency_source,
                        buffer_gb = %env.buffer_gb,
                        buffer_from = env.buffer_source,
                        cpus = limits.cpus,
                        memory_bytes = limits.memory_bytes,
                        limits_from_cgroup = limits.cpus_from_cgroup || limits.memory_from_cgroup,
                        "azcopy fetcher ready"
                    );
                    Some(Arc::new(AzcopyFetcher::new(
                        AzcopyConfig {
                            binary,
                            cache_root: cache_dir.to_path_buf(),
                            env,
                            stall_timeout: config.azcopy_stall_timeout,
                        },
                        store,
                    )))
                }
                None => {
                    tracing::warn!(
                        "azcopy not found (--azcopy-path or PATH): every file is fetched natively"
                    );
                    None
                }
            }
        }
    };
    Arc::new(SelectingFetcher::new(
        config.mode,
        native,
        azcopy,
        config.azcopy_min_size,
    ))
}

/// `explicit` if it is an executable file, else `azcopy` on PATH.
fn find_azcopy(explicit: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = explicit {
        return executable(path).then(|| path.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("azcopy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| executable(p))
}
