//! Command-line arguments (clap). Turns arguments into config structs; nothing else.

use crate::cache::{Bounds, MinFree};
use crate::config::{
    default_cache_dir, parse_duration, parse_mode, parse_size, CacheConfig, FetchConfig,
    MountConfig, PrefetchConfig, StorageConfig,
};
use crate::fetch::native::NativeConfig;
use crate::fetch::select::FetcherMode;
use crate::fs::FsConfig;
use crate::fuse::session::SessionConfig;
use crate::location::Location;
use crate::materialise::verify::VerifyPolicy;
use crate::storage::RetryPolicy;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "adlsfs",
    version,
    about = "Mount Azure Data Lake Storage read-only, with a verified local cache"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log level or tracing filter (RUST_LOG wins when set)
    #[arg(long, global = true, env = "ADLSFS_LOG_LEVEL", default_value = "warn")]
    pub log_level: String,
    /// Log lines as text or as JSON objects
    #[arg(
        long,
        global = true,
        env = "ADLSFS_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Append logs to this file instead of stderr (a daemonised mount has no stderr)
    #[arg(long, global = true, env = "ADLSFS_LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Subcommand names, for telling `adlsfs <source> <mountpoint>` (mount(8)) from them.
pub const SUBCOMMANDS: [&str; 9] = [
    "mount",
    "prefetch",
    "stats",
    "ls",
    "stat",
    "upload",
    "cache",
    "help",
    "completions",
];

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a container or prefix read-only (daemonises unless --foreground)
    Mount(MountArgs),
    /// Warm the node cache with files, directories or globs of a location
    Prefetch(PrefetchArgs),
    /// Show a running mount's counters (Prometheus text)
    Stats(StatsArgs),
    /// List a directory of a container
    Ls(LsArgs),
    /// Show the properties, digests and metadata of one blob
    Stat(StatArgs),
    /// Upload local files, recording their xxh3_128 digest in blob metadata
    Upload(UploadArgs),
    /// Inspect or maintain the node cache
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Size, entry count, oldest and newest use
    Stats(CacheArgs),
    /// Entries with their blob URI, size and last use, most recent first
    Ls(CacheArgs),
    /// Evict least-recently-used entries now, down to --cache-size / --cache-min-free
    Gc(CacheArgs),
    /// Re-hash every entry and remove those that no longer match their digest
    Verify(CacheArgs),
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cache")]
pub struct CacheArgs {
    /// Node-local cache directory shared by all mounts on the machine
    #[arg(long, env = "ADLSFS_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: PathBuf,
    /// Largest total size of cached files (K/M/G/T suffixes); unlimited when unset
    #[arg(long, env = "ADLSFS_CACHE_SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Free space to keep on the cache's filesystem: bytes (K/M/G/T) or a percentage
    #[arg(long, env = "ADLSFS_CACHE_MIN_FREE", default_value = "5%", value_parser = MinFree::parse)]
    pub cache_min_free: MinFree,
}

impl CacheArgs {
    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_bytes: self.cache_size,
            min_free: self.cache_min_free,
        }
    }

    pub fn to_config(&self) -> CacheConfig {
        CacheConfig {
            dir: self.cache_dir.clone(),
            bounds: self.bounds(),
        }
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Storage")]
pub struct StorageArgs {
    /// Blob service endpoint of the account, e.g. http://127.0.0.1:10000/devstoreaccount1
    #[arg(long, env = "ADLSFS_ENDPOINT")]
    pub endpoint: Option<Url>,
    /// File of NAME=value credential variables (AZURE_STORAGE_ACCOUNT_KEY, ...); mode 0600
    #[arg(long, env = "ADLSFS_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Send requests unsigned (public containers)
    #[arg(long, env = "ADLSFS_ANONYMOUS")]
    pub anonymous: bool,
    /// Give up on a storage request after retrying transient faults for this long
    #[arg(long, env = "ADLSFS_RETRY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub retry_timeout: Duration,
    /// Abandon (and retry) a response that sends nothing for this long
    #[arg(long, env = "ADLSFS_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub read_timeout: Duration,
}

impl StorageArgs {
    pub fn to_config(&self) -> StorageConfig {
        StorageConfig {
            endpoint: self.endpoint.clone(),
            credentials_file: self.credentials_file.clone(),
            anonymous: self.anonymous,
            retry: RetryPolicy {
                read_timeout: self.read_timeout,
                ..RetryPolicy::with_budget(self.retry_timeout)
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// adls://account/container[/prefix] (or the abfss:// or https:// form)
    pub location: Location,
    /// Long format: size, modification time, xxh3_128 digest
    #[arg(short, long)]
    pub long: bool,
    /// List subdirectories recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// adls://account/container/path/to/blob
    pub location: Location,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// A local file or directory (uploaded recursively)
    pub source: PathBuf,
    /// Destination directory: adls://account/container[/prefix]
    pub location: Location,
    /// Create the container first if it does not exist
    #[arg(long)]
    pub create_container: bool,
    /// Files uploaded at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// adls://account/container[/prefix] (or the abfss:// or https:// form)
    pub location: Location,
    /// An existing, empty directory
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub mount: MountOptions,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Mount")]
pub struct MountOptions {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// How long listings and attributes are trusted before asking the service again
    #[arg(long, env = "ADLSFS_METADATA_TTL", default_value = "60s", value_parser = parse_duration)]
    pub metadata_ttl: Duration,
    /// Owner of every file (default: the mounting user)
    #[arg(long, env = "ADLSFS_UID")]
    pub uid: Option<u32>,
    /// Group of every file (default: the mounting user's group)
    #[arg(long, env = "ADLSFS_GID")]
    pub gid: Option<u32>,
    /// Permission bits of files
    #[arg(long, env = "ADLSFS_FILE_MODE", default_value = "0644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of directories
    #[arg(long, env = "ADLSFS_DIR_MODE", default_value = "0755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf unless root)
    #[arg(long, env = "ADLSFS_ALLOW_OTHER")]
    pub allow_other: bool,
    /// Threads reading FUSE requests
    #[arg(long, env = "ADLSFS_FUSE_THREADS", default_value_t = 8)]
    pub fuse_threads: usize,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Stay attached to the terminal instead of daemonising (use it in containers)
    #[arg(long, short = 'f', env = "ADLSFS_FOREGROUND")]
    pub foreground: bool,
    /// Serve the counters in Prometheus text format at http://ADDR/metrics
    #[arg(long, env = "ADLSFS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT, let downloads in progress finish for at most this long
    #[arg(long, env = "ADLSFS_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// `--fetcher` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FetcherArg {
    Auto,
    Azcopy,
    Native,
}

impl From<FetcherArg> for FetcherMode {
    fn from(arg: FetcherArg) -> Self {
        match arg {
            FetcherArg::Auto => FetcherMode::Auto,
            FetcherArg::Azcopy => FetcherMode::Azcopy,
            FetcherArg::Native => FetcherMode::Native,
        }
    }
}

/// How files are downloaded and verified (mount and prefetch).
#[derive(Debug, Args)]
#[command(next_help_heading = "Fetching")]
pub struct FetchArgs {
    /// Refuse (EIO) blobs with neither an xxh3_128 digest in metadata nor Content-MD5
    #[arg(long, env = "ADLSFS_REQUIRE_DIGEST")]
    pub require_digest: bool,
    /// Serve no byte of a file before the whole file is downloaded and verified (by
    /// default reads are served during the download from landed, transit-protected ranges)
    #[arg(long, env = "ADLSFS_VERIFY_BEFORE_READ")]
    pub verify_before_read: bool,
    /// Fetch every range as at most 4 MiB checked against the service's range MD5, on
    /// HTTPS too (always so on plain-HTTP endpoints while reads are served during the fetch)
    #[arg(long, env = "ADLSFS_CHECK_RANGES")]
    pub check_ranges: bool,
    /// Ranged GETs in flight per download (native fetcher)
    #[arg(long, env = "ADLSFS_NATIVE_PARALLELISM", default_value_t = 8)]
    pub native_parallelism: usize,
    /// Size of each ranged GET (native fetcher)
    #[arg(long, env = "ADLSFS_NATIVE_CHUNK_SIZE", default_value = "32M", value_parser = parse_size)]
    pub native_chunk_size: u64,
    /// How files are downloaded: azcopy for large blobs when free (auto), always azcopy, or
    /// always the built-in parallel downloader
    #[arg(long, env = "ADLSFS_FETCHER", value_enum, default_value = "auto")]
    pub fetcher: FetcherArg,
    /// The azcopy binary (default: `azcopy` on PATH)
    #[arg(long, env = "ADLSFS_AZCOPY_PATH")]
    pub azcopy_path: Option<PathBuf>,
    /// Smallest blob handed to azcopy. Unset, `auto` never uses azcopy (native won at every
    /// size measured here) and `azcopy` uses it from 20M up
    #[arg(long, env = "ADLSFS_AZCOPY_MIN_SIZE", value_parser = parse_size)]
    pub azcopy_min_size: Option<u64>,
    /// Kill an azcopy job whose transferred bytes do not grow for this long
    #[arg(long, env = "ADLSFS_AZCOPY_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub azcopy_stall_timeout: Duration,
    /// cgroup v2 mount whose cpu.max and memory.max size azcopy
    #[arg(long, env = "ADLSFS_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
}

impl FetchArgs {
    /// The fetch configuration; ranges are retried as long as storage requests are.
    pub fn to_config(&self, retry: RetryPolicy) -> FetchConfig {
        FetchConfig {
            mode: self.fetcher.into(),
            verify: VerifyPolicy {
                require_digest: self.require_digest,
                before_read: self.verify_before_read,
            },
            native: NativeConfig {
                chunk_size: self.native_chunk_size,
                parallelism: self.native_parallelism,
                check_ranges: self.check_ranges,
                retry,
            },
            azcopy_path: self.azcopy_path.clone(),
            azcopy_min_size: self.azcopy_min_size,
            azcopy_stall_timeout: self.azcopy_stall_timeout,
            cgroup_root: self.cgroup_root.clone(),
        }
    }
}

impl MountArgs {
    pub fn to_config(&self) -> MountConfig {
        let opts = &self.mount;
        let storage = self.storage.to_config();
        // SAFETY: getters without preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        MountConfig {
            location: self.location.clone(),
            cache: opts.cache.to_config(),
            fetch: opts.fetch.to_config(storage.retry),
            storage,
            fs: FsConfig {
                metadata_ttl: opts.metadata_ttl,
                uid: opts.uid.unwrap_or(euid),
                gid: opts.gid.unwrap_or(egid),
                file_mode: opts.file_mode,
                dir_mode: opts.dir_mode,
            },
            session: SessionConfig {
                mountpoint: self.mountpoint.clone(),
                fsname: self.location.to_string(),
                allow_other: opts.allow_other,
                threads: opts.fuse_threads,
            },
            metrics_addr: opts.metrics_addr,
            drain_timeout: opts.drain_timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// adls://account/container[/prefix] (or the abfss:// or https:// form)
    pub location: Location,
    /// Files, directories (recursively) or globs (`*`, `?`, `**`) relative to the location;
    /// everything under it when none are given
    pub paths: Vec<String>,
    /// Files downloaded at once
    #[arg(long, env = "ADLSFS_PREFETCH_PARALLEL", default_value_t = 4)]
    pub parallel: usize,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

impl PrefetchArgs {
    pub fn to_config(&self) -> PrefetchConfig {
        let storage = self.storage.to_config();
        PrefetchConfig {
            location: self.location.clone(),
            paths: self.paths.clone(),
            parallel: self.parallel,
            cache: self.cache.to_config(),
            fetch: self.fetch.to_config(storage.retry),
            storage,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The mountpoint of a running adlsfs mount
    pub mountpoint: PathBuf,
}
