//! Entra ID for the tests, as a real deployment meets it: Azurite in OAuth mode over HTTPS
//! (`--oauth basic` refuses bearer tokens over plain HTTP) with a private CA, and a token
//! service on loopback (`tests/support/token-service.js`, HTTPS too: object_store's token
//! clients inherit the store's HTTPS-only setting) that answers the client-secret and
//! federated (workload identity) grants at `/<tenant>/oauth2/v2.0/token` and managed
//! identity in its IMDS and App Service forms, and (through a stand-in `az` on PATH) the
//! Azure CLI, and counts the grants it made.
//!
//! The CA is made once per test process with the `openssl` CLI; the process's own
//! `SSL_CERT_FILE` is pointed at a full bundle (system roots + the test CA), as a user
//! with a private CA must do, so the fixture's own store trusts Azurite too. Tokens are
//! JWTs with a dummy signature (Azurite checks issuer, audience and lifetime only) and
//! `oid`/`tid` claims, so a user-delegation key (azcopy's SAS) can be had.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The system roots that a full bundle starts from.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "6f1c3e2a-0d4b-4c5e-9f8a-7b6c5d4e3f2a";

/// A TLS server's certificate and private key (mode 0600), PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A private CA and one server certificate for `IP:127.0.0.1, DNS:localhost`.
pub struct TestCa {
    dir: tempfile::TempDir,
    pub server: ServerCert,
    /// System roots + the test CA, for `SSL_CERT_FILE`.
    pub bundle: PathBuf,
}

static CA: OnceLock<TestCa> = OnceLock::new();

/// The test process's CA, made on first use; also sets this process's `SSL_CERT_FILE` to
/// its bundle (before the caller builds any HTTPS client), so every client here and every
/// child trusts it. One per process, so parallel tests in one process agree on it.
pub fn test_ca() -> &'static TestCa {
    CA.get_or_init(|| {
        let ca = TestCa::generate();
        std::env::set_var("SSL_CERT_FILE", &ca.bundle);
        extern "C" fn remove_ca_dir() {
            if let Some(ca) = CA.get() {
                let _ = std::fs::remove_dir_all(ca.dir.path());
            }
        }
        // Statics are never dropped: remove the keys when the process exits.
        unsafe { libc::atexit(remove_ca_dir) };
        ca
    })
}

impl TestCa {
    fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("adlsfs-ca-")
            .tempdir()
            .unwrap();
        let p = |name: &str| dir.path().join(name);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            dir.path(),
            &[
                &["req", "-x509", "-nodes"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ],
            &[
                "-days",
                "2",
                "-subj",
                "/CN=adlsfs test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir.path(),
            &[
                &["req", "-nodes"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ],
            &["-subj", "/CN=127.0.0.1"],
        );
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir.path(),
            &[&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
            ]],
            &[
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        for key in ["ca.key", "server.key"] {
            std::fs::set_permissions(p(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let system = std::fs::read_to_string(SYSTEM_ROOTS).unwrap_or_else(|e| {
            panic!("system roots {SYSTEM_ROOTS}: {e} (install ca-certificates)")
        });
        let ca = std::fs::read_to_string(p("ca.crt")).unwrap();
        std::fs::write(p("bundle.pem"), format!("{system}\n{ca}")).unwrap();
        TestCa {
            server: ServerCert {
                cert: p("server.crt"),
                key: p("server.key"),
            },
            bundle: p("bundle.pem"),
            dir,
        }
    }
}

fn openssl(dir: &Path, head: &[&[&str]], tail: &[&str]) {
    let out = Command::new("openssl")
        .args(head.concat())
        .args(tail)
        .current_dir(dir)
        .output()
        .expect("openssl not found on PATH");
    assert!(
        out.status.success(),
        "openssl {:?} failed: {}",
        head.concat(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Entra ID credential flow a test uses, with the variables it is configured by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// `AZURE_MSI_ENDPOINT`: the IMDS protocol (`Metadata: true`).
    ManagedIdentity,
    /// `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, as App Service sets them.
    AppService,
    /// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
    /// `AZURE_AUTHORITY_HOST` (ending in `/`, as the AKS webhook sets it).
    WorkloadIdentity,
    /// `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_AUTHORITY_HOST`.
    ClientSecret,
    /// `AZURE_USE_AZURE_CLI=true`, with `tests/support/az` as `az` first on PATH.
    AzureCli,
}

/// Grants the token service made, by kind, and requests it refused.
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Grants {
    pub client_secret: u32,
    pub federated: u32,
    pub imds: u32,
    pub app_service: u32,
    pub azure_cli: u32,
    pub refused: u32,
}

impl Grants {
    /// The grants of `flow`'s kind.
    pub fn of(&self, flow: Flow) -> u32 {
        match flow {
            Flow::ManagedIdentity => self.imds,
            Flow::AppService => self.app_service,
            Flow::WorkloadIdentity => self.federated,
            Flow::ClientSecret => self.client_secret,
            Flow::AzureCli => self.azure_cli,
        }
    }

    /// Panics unless `flow`'s grant was made and nothing else was asked for.
    pub fn assert_only(&self, flow: Flow) {
        let total =
            self.client_secret + self.federated + self.imds + self.app_service + self.azure_cli;
        assert!(
            self.of(flow) >= 1 && self.of(flow) == total && self.refused == 0,
            "expected only {flow:?} grants, the token service saw {self:?}"
        );
    }
}

/// Token lifetimes the service hands out.
#[derive(Clone, Copy, Debug)]
pub struct Lifetime {
    /// What the answer claims (`expires_in`, or `expires_on` = now + this).
    pub expires_in: u64,
    /// The token's own `exp` − now, in seconds; negative for a token Azurite must refuse.
    pub token_lifetime: i64,
}

impl Default for Lifetime {
    fn default() -> Self {
        Self {
            expires_in: 3600,
            token_lifetime: 3600,
        }
    }
}

impl Lifetime {
    /// Tokens that claim an hour but expired a minute ago.
    pub fn expired() -> Self {
        Self {
            expires_in: 3600,
            token_lifetime: -60,
        }
    }
}

/// A running token service for one flow; stopped on drop.
pub struct Entra {
    pub flow: Flow,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    client_secret: String,
    identity_header: String,
}

impl Entra {
    /// Starts the token service with the test CA's server certificate; panics, with its
    /// output, when it cannot.
    pub fn start(flow: Flow, ca: &TestCa, lifetime: Lifetime) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("adlsfs-entra-")
            .tempdir()
            .unwrap();
        let secret = || format!("{:032x}", fastrand::u128(..));
        let (client_secret, identity_header, assertion) = (secret(), secret(), secret());
        write_private(&dir.path().join("federated-token"), &assertion);
        let config = serde_json::json!({
            "cert": ca.server.cert,
            "key": ca.server.key,
            "tenant": TENANT,
            "clientId": CLIENT_ID,
            "clientSecret": client_secret,
            "assertion": assertion,
            "identityHeader": identity_header,
            "expiresIn": lifetime.expires_in,
            "tokenLifetime": lifetime.token_lifetime,
            "countsFile": dir.path().join("grants.json"),
        });
        let config_path = dir.path().join("config.json");
        write_private(&config_path, &config.to_string());
        let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(support.join("az"), bin.join("az")).unwrap();
        let script = support.join("token-service.js");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        super::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().expect("node not found on PATH");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the token service did not start: {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
        };
        Self {
            flow,
            child,
            port,
            dir,
            client_secret,
            identity_header,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The variables that configure `flow` against this service, plus `SSL_CERT_FILE`.
    pub fn env(&self, ca: &TestCa) -> Vec<(String, String)> {
        let authority = self.url("/");
        let token_file = self.dir.path().join("federated-token");
        let vars: Vec<(&str, String)> = match self.flow {
            Flow::ManagedIdentity => vec![("AZURE_MSI_ENDPOINT", self.url("/msi/token"))],
            Flow::AppService => vec![
                ("IDENTITY_ENDPOINT", self.url("/appservice/token")),
                ("IDENTITY_HEADER", self.identity_header.clone()),
            ],
            Flow::WorkloadIdentity => vec![
                ("AZURE_CLIENT_ID", CLIENT_ID.into()),
                ("AZURE_TENANT_ID", TENANT.into()),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    token_file.display().to_string(),
                ),
                ("AZURE_AUTHORITY_HOST", authority),
            ],
            Flow::ClientSecret => vec![
                ("AZURE_CLIENT_ID", CLIENT_ID.into()),
                ("AZURE_TENANT_ID", TENANT.into()),
                ("AZURE_CLIENT_SECRET", self.client_secret.clone()),
                ("AZURE_AUTHORITY_HOST", authority),
            ],
            Flow::AzureCli => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let path = std::env::join_paths(
                    std::iter::once(self.dir.path().join("bin"))
                        .chain(std::env::split_paths(&path)),
                );
                vec![
                    ("AZURE_USE_AZURE_CLI", "true".into()),
                    ("AZ_STANDIN_TOKEN_URL", self.url("/cli/token")),
                    ("PATH", path.unwrap().to_string_lossy().into_owned()),
                ]
            }
        };
        vars.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain([("SSL_CERT_FILE".into(), ca.bundle.display().to_string())])
            .collect()
    }

    /// Panics if `text` (a log, a command's output) shows a token, a client secret or an
    /// identity header this service knows.
    pub fn assert_no_secret_in(&self, text: &str) {
        // Every token starts with the same JWT header.
        let token_start = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9";
        for (what, secret) in [
            ("a token", token_start),
            ("the client secret", &self.client_secret),
            ("the identity header", &self.identity_header),
        ] {
            assert!(!text.contains(secret), "{what} shows in:\n{text}");
        }
    }

    /// The grants made so far.
    pub fn grants(&self) -> Grants {
        let text = std::fs::read_to_string(self.dir.path().join("grants.json"))
            .expect("the token service writes its counts");
        serde_json::from_str(&text).expect("the token service's counts")
    }
}

impl Drop for Entra {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
