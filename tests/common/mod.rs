//! Test support: a private Azurite per test on a free loopback port, uniquely named
//! containers, and helpers to build stores. A test that cannot start Azurite fails; it
//! never skips.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod conformance;
pub mod entra;
pub mod fixture;
pub mod mount;
pub mod pipeline;
pub mod proxy;

use adlsfs::storage::azure::{AzureConfig, AzureStore};
use adlsfs::storage::credentials::{Credential, Secret, EMULATOR_ACCOUNT, EMULATOR_KEY};
use adlsfs::storage::RetryPolicy;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use url::Url;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Azurite blob service, stopped (and its data removed) on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    debug_log: Option<PathBuf>,
    /// Set when it serves HTTPS and checks Entra ID bearer tokens.
    oauth: bool,
}

/// What an Azurite instance serves besides the plain blob service.
#[derive(Default)]
pub struct AzuriteOptions<'a> {
    /// Its request log on, so tests can count the GETs a blob received.
    pub request_log: bool,
    /// HTTPS with this certificate and `--oauth basic`: bearer tokens are checked (issuer,
    /// audience, lifetime; not the signature).
    pub oauth_tls: Option<&'a entra::ServerCert>,
}

impl Azurite {
    /// Starts Azurite with in-memory persistence; panics with a clear message when it can't.
    pub fn start() -> Self {
        Self::start_with(AzuriteOptions::default())
    }

    /// Starts Azurite with its request log on, so tests can count the GETs a blob received.
    pub fn start_logged() -> Self {
        Self::start_with(AzuriteOptions {
            request_log: true,
            ..Default::default()
        })
    }

    pub fn start_with(options: AzuriteOptions) -> Self {
        let request_log = options.request_log;
        let dir = tempfile::Builder::new()
            .prefix("adlsfs-azurite-")
            .tempdir()
            .expect("temp dir for Azurite");
        // A just-freed port can be taken by a parallel test before Azurite binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let debug_log = request_log.then(|| dir.path().join("requests.log"));
            let mut child =
                spawn_azurite(port, dir.path(), debug_log.as_deref(), options.oauth_tls);
            if wait_until_listening(port, &mut child) {
                return Self {
                    child,
                    port,
                    dir,
                    debug_log,
                    oauth: options.oauth_tls.is_some(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("azurite.log")).unwrap_or_default();
        panic!("Azurite did not start (install it with scripts/setup); its output:\n{log}");
    }

    /// The account's blob service URL, path-style as Azurite serves it.
    pub fn endpoint(&self) -> Url {
        Url::parse(&format!("{}/{EMULATOR_ACCOUNT}", self.base_url())).unwrap()
    }

    /// `http://127.0.0.1:<port>`, or `https://` in OAuth mode.
    fn base_url(&self) -> String {
        let scheme = if self.oauth { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `AZURE_STORAGE_CONNECTION_STRING` for this instance.
    pub fn connection_string(&self) -> String {
        format!(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri={}",
            self.base_url()
        )
    }

    /// GET requests Azurite has received for one blob (ranged or whole), from its request
    /// log. Panics unless started with [`Azurite::start_logged`].
    pub fn blob_gets(&self, container: &str, blob: &str) -> usize {
        self.blob_get_lines(container, blob).len()
    }

    /// The request log's lines of the GETs counted by [`Azurite::blob_gets`] (each with
    /// the request's headers).
    pub fn blob_get_lines(&self, container: &str, blob: &str) -> Vec<String> {
        let log = self
            .debug_log
            .as_ref()
            .expect("Azurite started without a request log");
        let mut url = self.endpoint();
        url.set_port(None).unwrap();
        url.path_segments_mut()
            .unwrap()
            .push(container)
            .extend(blob.split('/'));
        // With or without a query (azcopy's requests carry a SAS).
        let plain = format!("RequestMethod=GET RequestURL={url} ");
        let with_query = format!("RequestMethod=GET RequestURL={url}?");
        let lines = || -> Vec<String> {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&plain) || l.contains(&with_query))
                .map(str::to_string)
                .collect()
        };
        // Azurite writes its log asynchronously: wait until the count stops moving.
        let mut last = lines();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = lines();
            if now.len() == last.len() {
                return now;
            }
            last = now;
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A store for `container` with the emulator's account key.
    pub fn store(&self, container: &str) -> AzureStore {
        self.store_with(container, Credential::AccountKey(Secret::new(EMULATOR_KEY)))
    }

    pub fn store_with(&self, container: &str, credential: Credential) -> AzureStore {
        AzureStore::new(AzureConfig {
            account: EMULATOR_ACCOUNT.to_string(),
            container: container.to_string(),
            endpoint: self.endpoint(),
            credential,
            retry: RetryPolicy::with_budget(Duration::from_secs(10)),
        })
        .expect("building the Azure store")
    }

    /// A new, uniquely named, empty container and a store for it.
    pub async fn new_container(&self) -> (String, AzureStore) {
        let name = unique_container_name();
        let store = self.store(&name);
        assert!(store.create_container().await.expect("creating container"));
        (name, store)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_azurite(
    port: u16,
    dir: &Path,
    debug_log: Option<&Path>,
    oauth_tls: Option<&entra::ServerCert>,
) -> Child {
    let log = std::fs::File::create(dir.join("azurite.log")).expect("azurite log file");
    let mut cmd = Command::new("azurite-blob");
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .args([
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ])
        .current_dir(dir)
        .args(
            debug_log
                .map(|p| vec!["--debug".into(), p.as_os_str().to_owned()])
                .unwrap_or_default(),
        )
        .args(oauth_tls.map_or_else(Vec::new, |tls| {
            vec![
                "--oauth".into(),
                "basic".into(),
                "--cert".into(),
                tls.cert.as_os_str().to_owned(),
                "--key".into(),
                tls.key.as_os_str().to_owned(),
            ]
        }))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Azurite must not outlive a test process that is killed or aborts.
    die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.spawn()
        .expect("azurite-blob not found on PATH: run scripts/setup (npm package azurite)")
}

/// Has the kernel send `signal` to the command's process when the test process dies, so
/// no service or daemon outlives a test that is killed or aborts.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            Ok(())
        });
    }
}

fn wait_until_listening(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Lowercase, 3–63 characters, unique across parallel tests and processes.
pub fn unique_container_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Path of the built `adlsfs` binary.
pub fn adlsfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_adlsfs"))
}

/// The `adlsfs` binary with none of the caller's `AZURE_*` credential variables.
pub fn adlsfs_command() -> Command {
    let mut cmd = Command::new(adlsfs_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AZURE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A command's standard error, for assertions and their messages.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's standard output, after asserting that it succeeded.
pub fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "adlsfs failed: {}", stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The errno of close(2) on the file's descriptor (0 when it succeeds): dropping a
/// `File` ignores close's error, which is what a reader must learn a failure from.
pub fn close_errno(file: std::fs::File) -> i32 {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    // SAFETY: fd was just released by the File and is closed once, here.
    match unsafe { libc::close(fd) } {
        0 => 0,
        _ => std::io::Error::last_os_error().raw_os_error().unwrap_or(-1),
    }
}

/// Polls `cond` every 25 ms; panics naming `what` after 20 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Relative path → size of every regular file under `root`, walked with plain std::fs.
pub fn walk(root: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let path = entry.path();
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.insert(rel.into_owned(), meta.len());
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (different for different seeds).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A runtime for synchronous tests that set up fixtures with the async store.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// User metadata carrying `data`'s xxh3_128, as adlsfs upload and thds.adls write it.
pub fn with_digest(data: &[u8]) -> adlsfs::storage::Metadata {
    adlsfs::storage::Metadata::from([(
        adlsfs::digest::XXH3_METADATA_KEY.to_string(),
        adlsfs::digest::xxh3_128(data).to_base64(),
    )])
}

/// Uploads `data` through a temporary file like `adlsfs upload` (block upload when
/// large, digest in metadata).
pub fn put_file(store: &AzureStore, name: &str, data: &[u8]) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), data).unwrap();
    rt().block_on(adlsfs::commands::upload::upload_file(
        store,
        tmp.path(),
        name,
    ))
    .unwrap_or_else(|e| panic!("uploading {name}: {e}"));
}
