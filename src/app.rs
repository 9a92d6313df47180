//! Wiring for the mount: runtime, storage, cache, fetcher, filesystem core, FUSE session,
//! and signals.

use crate::cache::Cache;
use crate::cli::MountArgs;
use crate::cli::MountOptions;
use crate::fetch::azcopy::{AzcopyConfig, AzcopyFetcher};
use crate::fetch::native::{NativeConfig, NativeFetcher};
use crate::fetch::select::{FetcherMode, SelectingFetcher};
use crate::fetch::{sizing, Fetcher};
use crate::fs::{AdlsFs, FsConfig};
use crate::fuse::session::{self, MountConfig};
use crate::fuse::FuseAdapter;
use crate::storage::azure::AzureStore;
use crate::storage::BlobStore;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

/// How often the main loop checks whether the session ended from outside.
const SESSION_POLL: Duration = Duration::from_millis(200);

pub fn run_mount(args: MountArgs) -> Result<()> {
    // Check the mountpoint before anything slow, so the error is immediate.
    session::check_mountpoint(&args.mountpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("adlsfs-worker")
        .build()
        .context("starting the async runtime")?;
    let azure = Arc::new(args.storage.to_config().connect(&args.location)?);
    let store: Arc<dyn BlobStore> = azure.clone();
    // Fail at mount time, not at first access, when the location is wrong or unreadable.
    runtime
        .block_on(store.list_dir(&args.location.dir_prefix()))
        .with_context(|| format!("checking access to {}", args.location))?;
    let opts = &args.mount;
    let cache = Arc::new(
        Cache::open_bounded(
            &opts.cache.cache_dir,
            opts.require_digest,
            opts.cache.bounds(),
        )
        .context("opening the cache directory")?,
    );
    let fetcher = build_fetcher(opts, Arc::clone(&store), azure);
    // SAFETY: getters without preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let fs = Arc::new(AdlsFs::new(
        args.location.clone(),
        store,
        cache,
        fetcher,
        FsConfig {
            metadata_ttl: opts.metadata_ttl,
            uid: opts.uid.unwrap_or(euid),
            gid: opts.gid.unwrap_or(egid),
            file_mode: opts.file_mode,
            dir_mode: opts.dir_mode,
        },
    ));
    let adapter = FuseAdapter::new(fs, runtime.handle().clone(), opts.metadata_ttl);
    let mounted = session::mount(
        adapter,
        &MountConfig {
            mountpoint: args.mountpoint.clone(),
            fsname: args.location.to_string(),
            allow_other: opts.allow_other,
            threads: opts.fuse_threads,
        },
    )?;
    tracing::info!(location = %args.location, mountpoint = %args.mountpoint.display(), "mounted");
    eprintln!(
        "adlsfs: mounted {} at {}",
        args.location,
        args.mountpoint.display()
    );

    let signal = runtime.block_on(wait_for_end(&mounted))?;
    match signal {
        Some(name) => tracing::info!(signal = name, "unmounting"),
        None => tracing::info!("unmounted externally"),
    }
    mounted.unmount().context("unmounting")?;
    eprintln!("adlsfs: unmounted {}", args.mountpoint.display());
    Ok(())
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

/// The native fetcher, plus azcopy when the mode may use it and a binary is found.
fn build_fetcher(
    opts: &MountOptions,
    store: Arc<dyn BlobStore>,
    azure: Arc<AzureStore>,
) -> Arc<dyn Fetcher> {
    let native = Arc::new(NativeFetcher::new(
        store,
        NativeConfig {
            chunk_size: opts.native_chunk_size,
            parallelism: opts.native_parallelism,
        },
    ));
    let azcopy = match opts.fetcher {
        FetcherMode::Native => None,
        FetcherMode::Auto | FetcherMode::Azcopy => match find_azcopy(opts.azcopy_path.as_deref()) {
            Some(binary) => {
                let limits = sizing::read_limits(&opts.cgroup_root);
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
                        cache_root: opts.cache.cache_dir.clone(),
                        env,
                        stall_timeout: opts.azcopy_stall_timeout,
                    },
                    azure,
                )))
            }
            None => {
                tracing::warn!(
                    "azcopy not found (--azcopy-path or PATH): every file is fetched natively"
                );
                None
            }
        },
    };
    Arc::new(SelectingFetcher::new(
        opts.fetcher,
        native,
        azcopy,
        opts.azcopy_min_size,
    ))
}

/// `explicit` if it is an executable file, else `azcopy` on PATH.
fn find_azcopy(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
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
