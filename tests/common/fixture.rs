//! One fixture for the tests that mount: a private Azurite (optionally with its request
//! log, or in OAuth mode over HTTPS with a token service for one Entra ID flow), a fresh
//! container and its store, a cache directory (optionally on a small tmpfs), an optional
//! fault proxy in front of Azurite, and the commands a test runs against them, each with
//! the fixture's credentials.
//!
//! ```ignore
//! let fx = Fixture::start();
//! fx.put("f.txt", b"data");
//! let mount = fx.mount(&["--fetcher", "native"]);
//! assert_eq!(mount.metrics().get(CACHE_MISSES), 0.0);
//! ```

use super::entra::{self, Entra, Flow, Lifetime};
use super::mount::Mount;
use super::proxy::FaultProxy;
use super::{adlsfs_command, unique_container_name, walk, Azurite, AzuriteOptions};
use adlsfs::cache::Cache;
use adlsfs::fetch::Fetcher;
use adlsfs::materialise::verify::VerifyPolicy;
use adlsfs::materialise::Materialiser;
use adlsfs::metrics::Metrics;
use adlsfs::storage::azure::{AzureConfig, AzureStore};
use adlsfs::storage::credentials::{Credential, Secret, EMULATOR_ACCOUNT, EMULATOR_KEY};
use adlsfs::storage::{BlobMeta, BlobStore, Metadata, RetryPolicy};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mount arguments for a native download of one 1 MiB range at a time, which takes
/// seconds for a blob of 100 MiB or more on loopback: long enough to act during it.
pub const SLOW_NATIVE: [&str; 6] = [
    "--fetcher",
    "native",
    "--native-parallelism",
    "1",
    "--native-chunk-size",
    "1M",
];

/// What varies between fixtures; [`Fixture::builder`] starts with the plain one.
#[derive(Default)]
pub struct Builder {
    request_log: bool,
    proxy: bool,
    tmpfs: Option<String>,
    no_container: bool,
    entra: Option<(Flow, Lifetime)>,
}

impl Builder {
    /// Azurite with its request log on, for [`Fixture::blob_gets`].
    pub fn request_log(mut self) -> Self {
        self.request_log = true;
        self
    }

    /// A [`FaultProxy`] in front of Azurite: mounts and prefetches go through it.
    pub fn proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// The cache directory on a tmpfs of this size (e.g. "64M"), to fill a disk for real.
    pub fn tmpfs_cache(mut self, size: &str) -> Self {
        self.tmpfs = Some(size.to_string());
        self
    }

    /// A container name and a store for it, but no container: the test creates it.
    pub fn no_container(mut self) -> Self {
        self.no_container = true;
        self
    }

    /// Azurite in OAuth mode over HTTPS (a private CA) and a token service: the commands
    /// and mounts authenticate with `flow` alone. The fixture's own store still uses the
    /// account key, which Azurite accepts in OAuth mode too.
    pub fn entra(self, flow: Flow) -> Self {
        self.entra_tokens(flow, Lifetime::default())
    }

    /// [`Builder::entra`] with tokens of this lifetime.
    pub fn entra_tokens(mut self, flow: Flow, lifetime: Lifetime) -> Self {
        self.entra = Some((flow, lifetime));
        self
    }

    pub fn start(self) -> Fixture {
        let ca = self.entra.map(|_| entra::test_ca());
        let azurite = Azurite::start_with(AzuriteOptions {
            request_log: self.request_log,
            oauth_tls: ca.map(|ca| &ca.server),
        });
        let entra = self
            .entra
            .zip(ca)
            .map(|((flow, lifetime), ca)| (Entra::start(flow, ca, lifetime), ca));
        let container = unique_container_name();
        let store = Arc::new(azurite.store(&container));
        let rt = super::rt();
        if !self.no_container {
            assert!(rt
                .block_on(store.create_container())
                .expect("creating container"));
        }
        let proxy = self.proxy.then(|| FaultProxy::start(azurite.port));
        let cache = match self.tmpfs {
            Some(size) => CacheDir::Tmpfs(Tmpfs::new(&size)),
            None => CacheDir::Temp(tempfile::tempdir().unwrap()),
        };
        Fixture {
            azurite,
            container,
            store,
            proxy,
            cache,
            entra,
            rt,
        }
    }
}

enum CacheDir {
    Temp(tempfile::TempDir),
    Tmpfs(Tmpfs),
}

pub struct Fixture {
    pub azurite: Azurite,
    pub container: String,
    pub store: Arc<AzureStore>,
    proxy: Option<FaultProxy>,
    cache: CacheDir,
    entra: Option<(Entra, &'static entra::TestCa)>,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    /// Plain Azurite, a fresh container, a temporary cache directory.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `adls://devstoreaccount1/<container>`.
    pub fn location(&self) -> String {
        format!("adls://devstoreaccount1/{}", self.container)
    }

    /// `adls://devstoreaccount1/<container>/<blob>`, as prefetch and the xattrs name it.
    pub fn uri(&self, blob: &str) -> String {
        format!("{}/{blob}", self.location())
    }

    pub fn cache(&self) -> PathBuf {
        match &self.cache {
            CacheDir::Temp(dir) => dir.path().to_path_buf(),
            CacheDir::Tmpfs(disk) => disk.path().join("cache"),
        }
    }

    /// The tmpfs the cache directory is on. Panics unless built with `tmpfs_cache`.
    pub fn cache_disk(&self) -> &Path {
        match &self.cache {
            CacheDir::Tmpfs(disk) => disk.path(),
            CacheDir::Temp(_) => panic!("fixture built without tmpfs_cache"),
        }
    }

    /// A store for the container that signs with `credential`, straight to Azurite.
    pub fn store_with(&self, credential: Credential) -> Arc<AzureStore> {
        Arc::new(self.azurite.store_with(&self.container, credential))
    }

    /// A store for the container through the proxy, retrying quickly. Panics unless built
    /// with `proxy`.
    pub fn proxied_store(&self) -> Arc<AzureStore> {
        let store = AzureStore::new(AzureConfig {
            account: EMULATOR_ACCOUNT.into(),
            container: self.container.clone(),
            endpoint: self.proxy().endpoint(),
            credential: Credential::AccountKey(Secret::new(EMULATOR_KEY)),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                ..RetryPolicy::with_budget(Duration::from_secs(10))
            },
        });
        Arc::new(store.expect("building the proxied store"))
    }

    /// The materialisation pipeline over `fetcher` on the fixture's cache directory,
    /// refusing blobs without a digest (every [`Fixture::put`] has one), counting into
    /// `metrics`.
    pub fn pipeline(&self, fetcher: Arc<dyn Fetcher>, metrics: &Arc<Metrics>) -> Materialiser {
        let cache = Cache::open(&self.cache()).expect("opening the fixture's cache");
        let policy = VerifyPolicy {
            require_digest: true,
            ..VerifyPolicy::default()
        };
        Materialiser::new(Arc::new(cache), fetcher, policy).with_metrics(Arc::clone(metrics))
    }

    /// The token service. Panics unless built with `entra`.
    pub fn token_service(&self) -> &Entra {
        &self.entra.as_ref().expect("fixture built without entra").0
    }

    /// The variables that give adlsfs this fixture's credentials: Azurite's connection
    /// string, or the Entra ID flow's variables, `SSL_CERT_FILE` and the HTTPS endpoint.
    pub fn credential_env(&self) -> Vec<(String, String)> {
        match &self.entra {
            Some((service, ca)) => {
                let mut env = service.env(ca);
                env.push((
                    "ADLSFS_ENDPOINT".into(),
                    self.azurite.endpoint().to_string(),
                ));
                env
            }
            None => vec![(
                "AZURE_STORAGE_CONNECTION_STRING".into(),
                self.azurite.connection_string(),
            )],
        }
    }

    /// The proxy. Panics unless built with `proxy`.
    pub fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("fixture built without a proxy")
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Put Blob of `data` with its xxh3 digest in metadata, as thds.adls writes it.
    pub fn put(&self, name: &str, data: &[u8]) -> BlobMeta {
        self.put_meta(name, data, &super::with_digest(data))
    }

    /// Put Blob of `data` whose metadata claims the xxh3 digest of `claimed` instead.
    pub fn put_claiming(&self, name: &str, data: &[u8], claimed: &[u8]) {
        self.put_meta(name, data, &super::with_digest(claimed));
    }

    /// Put Blob without xxh3 metadata (the service still records Content-MD5).
    pub fn put_raw(&self, name: &str, data: &[u8]) {
        self.put_meta(name, data, &Metadata::new());
    }

    pub fn put_meta(&self, name: &str, data: &[u8], metadata: &Metadata) -> BlobMeta {
        self.block_on(self.store.put(name, Bytes::from(data.to_vec()), metadata))
            .unwrap_or_else(|e| panic!("put {name}: {e}"))
    }

    /// Many Put Blobs with digests, 16 at a time.
    pub fn put_all(&self, blobs: &[(String, Vec<u8>)]) {
        use futures::stream::{self, StreamExt, TryStreamExt};
        self.block_on(
            stream::iter(blobs)
                .map(|(name, data)| async move {
                    let metadata = super::with_digest(data);
                    self.store
                        .put(name, Bytes::from(data.clone()), &metadata)
                        .await
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>(),
        )
        .expect("putting blobs");
    }

    /// Uploads `data` like `adlsfs upload`: block upload when large, digest in metadata.
    pub fn upload(&self, name: &str, data: &[u8]) {
        super::put_file(&self.store, name, data);
    }

    /// Mounts the container on the fixture's cache (through the proxy, if any).
    pub fn mount(&self, args: &[&str]) -> Mount {
        self.mount_with_env(args, &[])
    }

    pub fn mount_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Mount {
        self.mount_on(&self.cache(), args, env)
    }

    /// Mounts the container with another cache directory.
    pub fn mount_on(&self, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Mount {
        let args = self.via_proxy(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Mount::start(&self.credential_env(), &self.location(), cache, &args, env)
    }

    /// `args` with `--endpoint <proxy>` in front when the fixture has a proxy.
    fn via_proxy(&self, args: &[&str]) -> Vec<String> {
        let endpoint = self
            .proxy
            .iter()
            .flat_map(|p| ["--endpoint".to_string(), p.endpoint().to_string()]);
        endpoint.chain(args.iter().map(|a| a.to_string())).collect()
    }

    /// Mounts the container in the mount(8)/fstab form, `adlsfs <source> <mountpoint> -o
    /// cache_dir=...,foreground[,endpoint=<proxy>],<options>`.
    pub fn mount_form(&self, options: &str) -> Mount {
        let mut all = format!("cache_dir={},foreground", self.cache().display());
        if let Some(proxy) = &self.proxy {
            all.push_str(&format!(",endpoint={}", proxy.endpoint()));
        }
        all.push(',');
        all.push_str(options);
        Mount::start_mount_form(&self.credential_env(), &self.location(), &all)
    }

    /// `adlsfs` with the fixture's credentials ([`Fixture::credential_env`]) and no others.
    pub fn command(&self) -> Command {
        let mut cmd = adlsfs_command();
        cmd.envs(self.credential_env());
        cmd
    }

    /// Runs `adlsfs <args>` with the fixture's credentials.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running adlsfs")
    }

    /// `adlsfs prefetch <location> <args> --cache-dir <cache>` (through the proxy, if any).
    pub fn prefetch(&self, args: &[&str]) -> Output {
        self.command()
            .arg("prefetch")
            .arg(self.location())
            .args(self.via_proxy(args))
            .arg("--cache-dir")
            .arg(self.cache())
            .output()
            .expect("running adlsfs prefetch")
    }

    /// `adlsfs cache <args> --cache-dir <cache>`.
    pub fn cache_cli(&self, args: &[&str]) -> Output {
        self.command()
            .arg("cache")
            .args(args)
            .arg("--cache-dir")
            .arg(self.cache())
            .output()
            .expect("running adlsfs cache")
    }

    /// Writes a private (0600) credentials file in `dir` holding this Azurite's
    /// connection string (an account key, whatever the fixture's own credentials), as
    /// `--credentials-file` and `credentials_file=` read it.
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("creds");
        let cs = self.azurite.connection_string();
        std::fs::write(&path, format!("AZURE_STORAGE_CONNECTION_STRING={cs}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// GETs Azurite received for `blob`. Panics unless built with `request_log`.
    pub fn blob_gets(&self, blob: &str) -> usize {
        self.azurite.blob_gets(&self.container, blob)
    }

    /// The request log's lines of the GETs Azurite received for `blob`, headers included.
    /// Panics unless built with `request_log`.
    pub fn blob_get_lines(&self, blob: &str) -> Vec<String> {
        self.azurite.blob_get_lines(&self.container, blob)
    }

    /// Where this container's complete cache entries live.
    pub fn entry_dir(&self) -> PathBuf {
        self.cache()
            .join("v1/devstoreaccount1")
            .join(&self.container)
    }

    /// The complete cache entries of this container: path below [`Fixture::entry_dir`]
    /// (blob name, `@`, ETag token) → size.
    ///
    /// Reads are served while a file still arrives, and its verification and publication
    /// come after the last byte was read: this first waits (up to 30 s) until no download
    /// has a temporary left, so it sees what the downloads before it made.
    pub fn cached(&self) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cache().join("tmp").exists()
            && self.temporaries() > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = self.entry_dir();
        if dir.exists() {
            walk(&dir)
        } else {
            BTreeMap::new()
        }
    }

    /// The blob names of the complete cache entries, one per cached version.
    pub fn cached_blobs(&self) -> Vec<String> {
        self.cached()
            .into_keys()
            .map(|k| match k.rsplit_once('@') {
                Some((blob, _etag)) => blob.to_string(),
                None => panic!("cache entry {k} has no @etag"),
            })
            .collect()
    }

    /// Temporaries in the cache (downloads in progress or left by a dead process).
    pub fn temporaries(&self) -> usize {
        std::fs::read_dir(self.cache().join("tmp"))
            .expect("the cache has a tmp directory")
            .count()
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    pub fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
