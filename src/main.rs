//! The `adlsfs` binary: parse arguments, run the command, report errors with context.

use adlsfs::cache::layout::Layout;
use adlsfs::cli::{CacheCommand, Cli, Command};
use adlsfs::commands::{cache, ls, upload};
use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global.log_level);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adlsfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Mount(args) => adlsfs::app::run_mount(args),
        Command::Cache(command) => run_cache(command),
        Command::Ls(args) => runtime()?.block_on(async {
            let store = args.storage.to_config().connect(&args.location)?;
            let entries = ls::list(&store, &args.location.dir_prefix(), args.recursive)
                .await
                .with_context(|| format!("listing {}", args.location))?;
            for entry in &entries {
                println!("{}", ls::format_entry(entry, args.long));
            }
            Ok(())
        }),
        Command::Stat(args) => runtime()?.block_on(async {
            use adlsfs::storage::BlobStore;
            let store = args.storage.to_config().connect(&args.location)?;
            let meta = store
                .head(&args.location.prefix)
                .await
                .with_context(|| format!("reading the properties of {}", args.location))?;
            let mtime: chrono::DateTime<chrono::Utc> = meta.last_modified.into();
            println!("uri: {}", args.location.blob_uri(&meta.name));
            println!("size: {}", meta.size);
            println!("last-modified: {}", mtime.to_rfc3339());
            println!("etag: {}", meta.etag);
            if let Some(md5) = meta.content_md5 {
                println!("content-md5: {md5}");
            }
            for (k, v) in &meta.metadata {
                println!("metadata.{k}: {v}");
            }
            Ok(())
        }),
        Command::Upload(args) => runtime()?.block_on(async {
            let store = args.storage.to_config().connect(&args.location)?;
            if args.create_container && store.create_container().await? {
                eprintln!("created container {}", args.location.container);
            }
            let blobs = upload::upload(&store, &args.source, &args.location, args.parallel)
                .await
                .with_context(|| {
                    format!("uploading {} to {}", args.source.display(), args.location)
                })?;
            for blob in &blobs {
                let digest = blob.xxh3().ok().flatten().map(|d| d.to_base64());
                println!(
                    "{}  {} bytes  xxh3_128={}",
                    args.location.blob_uri(&blob.name),
                    blob.size,
                    digest.unwrap_or_default()
                );
            }
            Ok(())
        }),
    }
}

fn format_time(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn run_cache(command: CacheCommand) -> Result<()> {
    let (CacheCommand::Stats(args)
    | CacheCommand::Ls(args)
    | CacheCommand::Gc(args)
    | CacheCommand::Verify(args)) = &command;
    let layout = Layout::new(&args.cache_dir);
    if !layout.entries_dir().is_dir() {
        anyhow::bail!(
            "{} is not an adlsfs cache directory (no v1/ inside)",
            args.cache_dir.display()
        );
    }
    match &command {
        CacheCommand::Stats(_) => {
            let s = cache::stats(&layout);
            println!("cache: {}", args.cache_dir.display());
            println!("entries: {}", s.entries);
            println!("bytes: {}", s.bytes);
            println!(
                "oldest use: {}",
                s.oldest_use.map(format_time).unwrap_or("-".into())
            );
            println!(
                "newest use: {}",
                s.newest_use.map(format_time).unwrap_or("-".into())
            );
        }
        CacheCommand::Ls(_) => {
            for e in cache::list(&layout) {
                println!("{:>14}  {}  {}", e.len, format_time(e.last_use), e.uri);
            }
        }
        CacheCommand::Gc(args) => {
            let evicted = cache::gc(&layout, &args.bounds()).context("evicting")?;
            println!(
                "evicted {} entries ({} bytes); {} in use kept",
                evicted.files, evicted.bytes, evicted.skipped_in_use
            );
        }
        CacheCommand::Verify(_) => {
            let report = cache::verify(&layout).context("verifying")?;
            for removed in &report.removed {
                println!("removed corrupt entry: {removed}");
            }
            println!(
                "verified {} entries: {} corrupt and removed, {} without a recorded digest",
                report.checked,
                report.removed.len(),
                report.unverifiable
            );
            if !report.removed.is_empty() {
                anyhow::bail!(
                    "{} corrupt cache entries were found and removed",
                    report.removed.len()
                );
            }
        }
    }
    Ok(())
}
