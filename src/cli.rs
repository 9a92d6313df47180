//! Command-line arguments (clap). Turns arguments into config structs; nothing else.

use crate::config::{parse_duration, StorageConfig};
use crate::location::Location;
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List a directory of a container
    Ls(LsArgs),
    /// Show the properties, digests and metadata of one blob
    Stat(StatArgs),
    /// Upload local files, recording their xxh3_128 digest in blob metadata
    Upload(UploadArgs),
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
}

impl StorageArgs {
    pub fn to_config(&self) -> StorageConfig {
        StorageConfig {
            endpoint: self.endpoint.clone(),
            credentials_file: self.credentials_file.clone(),
            anonymous: self.anonymous,
            retry: RetryPolicy::with_budget(self.retry_timeout),
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
