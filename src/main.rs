//! The `adlsfs` binary: parse arguments (the mount(8) form included), daemonise a mount,
//! run the command, report errors with context.

use adlsfs::cache::layout::Layout;
use adlsfs::cli::{CacheCommand, Cli, Command, GlobalArgs, LogFormat, SUBCOMMANDS};
use adlsfs::commands::{cache, ls, prefetch, upload};
use adlsfs::mount_options;
use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match mount_options::rewrite(std::env::args_os().collect(), &SUBCOMMANDS) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("adlsfs: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cli = Cli::parse_from(args);
    let daemonising = matches!(&cli.command, Command::Mount(a) if !a.mount.foreground);
    if let Err(e) = init_logging(&cli.global, daemonising) {
        eprintln!("adlsfs: {e:#}");
        return ExitCode::FAILURE;
    }
    // A mount daemonises here, before any runtime or thread exists.
    let mut ready = None;
    if let Command::Mount(args) = &mut cli.command {
        if let Err(e) = absolutize(args) {
            eprintln!("adlsfs: {e:#}");
            return ExitCode::FAILURE;
        }
        if !args.mount.foreground {
            match adlsfs::daemon::daemonize() {
                Ok(notifier) => {
                    ready = Some(Box::new(notifier) as Box<dyn adlsfs::app::ReadyNotifier>)
                }
                Err(e) => {
                    eprintln!("adlsfs: daemonising: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let global = cli.global;
    let result = match cli.command {
        Command::Mount(args) => adlsfs::app::run_mount(args.to_config(), ready),
        other => run(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adlsfs: {e:#}");
            // Once: the log gets it too only when the log is not stderr (a log file, or a
            // daemon's syslog, where the parent already printed it).
            if global.log_file.is_some() || daemonising {
                tracing::error!(error = format!("{e:#}"), "exiting");
            }
            ExitCode::FAILURE
        }
    }
}

/// A daemon leaves its working directory: make its paths independent of it first.
fn absolutize(args: &mut adlsfs::cli::MountArgs) -> Result<()> {
    args.mountpoint = std::path::absolute(&args.mountpoint).context("resolving the mountpoint")?;
    let cache = &mut args.mount.cache.cache_dir;
    *cache = std::path::absolute(&*cache).context("resolving the cache directory")?;
    Ok(())
}

/// Logs go to --log-file, else to syslog for a daemon (it has no stderr), else stderr.
fn init_logging(global: &GlobalArgs, daemonising: bool) -> Result<()> {
    use std::sync::Mutex;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&global.log_level));
    if !filter.to_string().contains("fuser") {
        // fuser's one warning there, "Failed to umount filesystem: Invalid argument", comes
        // at every unmount made from outside (fusermount3 -u, umount, the kubelet): the
        // session, already gone, is unmounted again on drop. adlsfs reports its own
        // unmount failures; the rest of fuser's session log is errors, kept.
        filter = filter.add_directive("fuser::session=error".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (&global.log_file, global.log_format) {
        (Some(path), format) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            let builder = builder.with_writer(Mutex::new(file)).with_ansi(false);
            match format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
        }
        (None, format) if daemonising => {
            adlsfs::daemon::SyslogWriter::open();
            let builder = builder
                .with_writer(|| adlsfs::daemon::SyslogWriter)
                .with_ansi(false)
                .without_time();
            match format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
        }
        (None, format) => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let builder = builder.with_writer(std::io::stderr).with_ansi(ansi);
            match format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
        }
    }
    Ok(())
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Mount(_) => unreachable!("mounts are run by main"),
        Command::Cache(command) => run_cache(command),
        Command::Prefetch(args) => prefetch::run(args.to_config()),
        Command::Stats(args) => {
            use std::io::Read;
            let socket = adlsfs::app::stats_socket(&args.mountpoint);
            let mut conn = std::os::unix::net::UnixStream::connect(&socket).with_context(|| {
                format!(
                    "no running adlsfs mount answers for {} (socket {})",
                    args.mountpoint.display(),
                    socket.display()
                )
            })?;
            let mut text = String::new();
            conn.read_to_string(&mut text)
                .context("reading the counters")?;
            print!("{text}");
            Ok(())
        }
        Command::Ls(args) => adlsfs::app::runtime()?.block_on(async {
            let store = args.storage.to_config().connect(&args.location)?;
            let entries = ls::list(&store, &args.location.dir_prefix(), args.recursive)
                .await
                .with_context(|| format!("listing {}", args.location))?;
            for entry in &entries {
                println!("{}", ls::format_entry(entry, args.long));
            }
            Ok(())
        }),
        Command::Stat(args) => adlsfs::app::runtime()?.block_on(async {
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
        Command::Upload(args) => adlsfs::app::runtime()?.block_on(async {
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
