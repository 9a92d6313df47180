//! Credentials come from the environment, in Azure's own variable names, or from a file of
//! the same `NAME=value` lines named by `--credentials-file`: never from flags or mount
//! options, where they would show in /proc and fstab.

use super::StorageError;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use url::Url;

/// Account of the Azurite emulator.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published, well-known development key (not a secret).
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const EMULATOR_DEFAULT_URL: &str = "http://127.0.0.1:10000";

/// The variables read, in Azure SDK naming.
pub const CONNECTION_STRING_VAR: &str = "AZURE_STORAGE_CONNECTION_STRING";
pub const ACCOUNT_KEY_VAR: &str = "AZURE_STORAGE_ACCOUNT_KEY";
pub const SAS_TOKEN_VAR: &str = "AZURE_STORAGE_SAS_TOKEN";
/// The Entra ID variables, as the AKS workload identity webhook, App Service and the Azure
/// SDKs name them. `AZURE_AUTHORITY_HOST` (sovereign clouds; the webhook sets it, ending in
/// `/`) is the token authority for workload identity and client secrets. `IDENTITY_ENDPOINT`
/// is App Service's managed identity endpoint; its `IDENTITY_HEADER` is read by object_store
/// from the process environment itself, so it is not listed here.
const TOKEN_VARS: [&str; 8] = [
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_SECRET",
    "AZURE_USE_AZURE_CLI",
    "AZURE_MSI_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    IDENTITY_ENDPOINT_VAR,
];
/// App Service's managed identity endpoint: the one token variable without `AZURE_`.
const IDENTITY_ENDPOINT_VAR: &str = "IDENTITY_ENDPOINT";

/// A string that never shows in Debug or Display output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How requests are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    AccountKey(Secret),
    /// A SAS token, without the leading `?`.
    Sas(Secret),
    /// Entra ID tokens, resolved by object_store from these variables: workload identity
    /// (client id + tenant id + federated token file), client secret, Azure CLI
    /// (`AZURE_USE_AZURE_CLI=true`), else managed identity.
    Token(BTreeMap<String, Secret>),
    Anonymous,
}

/// Where an Entra ID credential gets its tokens, for error messages that say what to
/// check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    pub kind: &'static str,
    /// The token endpoint (or command) asked.
    pub endpoint: String,
    /// The variables (and facts) that decide it.
    pub check: &'static str,
}

impl Credential {
    /// Where tokens come from, for an Entra ID credential.
    pub fn token_source(&self) -> Option<TokenSource> {
        let Credential::Token(vars) = self else {
            return None;
        };
        let var = |k: &str| vars.get(k).map(|v| v.expose().to_string());
        let authority = || {
            let host = var("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| "https://login.microsoftonline.com".into());
            let tenant = var("AZURE_TENANT_ID").unwrap_or_else(|| "<AZURE_TENANT_ID>".into());
            format!("{}/{tenant}/oauth2/v2.0/token", host.trim_end_matches('/'))
        };
        let (endpoint, check) = match self.kind() {
            "workload identity" => (
                authority(),
                "AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE (readable, not expired) and AZURE_AUTHORITY_HOST, as the AKS workload identity webhook sets them, and that the identity has a federated credential for this service account",
            ),
            "client secret" => (
                authority(),
                "AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET (not expired) and AZURE_AUTHORITY_HOST",
            ),
            "Azure CLI" => (
                "`az account get-access-token`".into(),
                "AZURE_USE_AZURE_CLI, that `az` is on PATH and that `az login` was run",
            ),
            _ => (
                var(IDENTITY_ENDPOINT_VAR)
                    .or_else(|| var("AZURE_MSI_ENDPOINT"))
                    .unwrap_or_else(|| "http://169.254.169.254/metadata/identity/oauth2/token".into()),
                "AZURE_MSI_ENDPOINT or IDENTITY_ENDPOINT and IDENTITY_HEADER, AZURE_CLIENT_ID for a user-assigned identity, that a managed identity is assigned to this VM or node pool, and that NO_PROXY lists 169.254.169.254 when a proxy is set",
            ),
        };
        Some(TokenSource {
            kind: self.kind(),
            endpoint,
            check,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Credential::AccountKey(_) => "account key",
            Credential::Sas(_) => "SAS token",
            Credential::Token(vars) if vars.contains_key("AZURE_FEDERATED_TOKEN_FILE") => {
                "workload identity"
            }
            Credential::Token(vars) if vars.contains_key("AZURE_CLIENT_SECRET") => "client secret",
            Credential::Token(vars) if vars.contains_key("AZURE_USE_AZURE_CLI") => "Azure CLI",
            Credential::Token(_) => "managed identity",
            Credential::Anonymous => "anonymous",
        }
    }
}

/// What the credential sources say, before it is matched with a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub credential: Credential,
    /// The account a connection string is for, which must match the location's.
    pub account: Option<String>,
    /// The blob endpoint a connection string names.
    pub endpoint: Option<Url>,
}

/// Reads the credential variables from `file` when given (refused unless only its owner
/// can read it), else from the process environment.
pub fn load_vars(file: Option<&Path>) -> Result<BTreeMap<String, String>, StorageError> {
    match file {
        Some(path) => read_credentials_file(path),
        None => Ok(std::env::vars()
            .filter(|(k, _)| k.starts_with("AZURE_") || k == IDENTITY_ENDPOINT_VAR)
            .collect()),
    }
}

fn read_credentials_file(path: &Path) -> Result<BTreeMap<String, String>, StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |msg: String| StorageError::Credentials(format!("{}: {msg}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:04o} lets other users read it; run `chmod 600 {}`",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_env_lines(&text).map_err(err)
}

/// `NAME=value` lines; `#` comments, blank lines, an `export ` prefix and surrounding quotes
/// are allowed.
fn parse_env_lines(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not NAME=value", i + 1))?;
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        vars.insert(name.trim().to_string(), value.to_string());
    }
    Ok(vars)
}

/// Picks the credential the variables describe: a connection string first, then an account
/// key, a SAS token, and finally the Entra ID token flows.
pub fn resolve(vars: &BTreeMap<String, String>, anonymous: bool) -> Result<Access, StorageError> {
    if anonymous {
        return Ok(Access {
            credential: Credential::Anonymous,
            account: None,
            endpoint: None,
        });
    }
    let non_empty = |k: &str| vars.get(k).filter(|v| !v.trim().is_empty());
    if let Some(cs) = non_empty(CONNECTION_STRING_VAR) {
        return parse_connection_string(cs);
    }
    let credential = if let Some(key) = non_empty(ACCOUNT_KEY_VAR) {
        Credential::AccountKey(Secret::new(key.trim()))
    } else if let Some(sas) = non_empty(SAS_TOKEN_VAR) {
        Credential::Sas(Secret::new(sas.trim().trim_start_matches('?')))
    } else {
        Credential::Token(
            TOKEN_VARS
                .iter()
                .filter_map(|k| non_empty(k).map(|v| (k.to_string(), Secret::new(v.trim()))))
                .collect(),
        )
    };
    Ok(Access {
        credential,
        account: None,
        endpoint: None,
    })
}

/// Azure's `Key=Value;...` convention, including `UseDevelopmentStorage=true`.
pub fn parse_connection_string(cs: &str) -> Result<Access, StorageError> {
    let err = |msg: &str| StorageError::Credentials(format!("{CONNECTION_STRING_VAR}: {msg}"));
    let mut fields = BTreeMap::new();
    for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| err("expected Key=Value pairs separated by ';'"))?;
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let get = |k: &str| fields.get(k).map(String::as_str);
    let parse_url =
        |u: &str| Url::parse(u).map_err(|e| err(&format!("endpoint {u:?} is not a URL: {e}")));
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let base = get("developmentstorageproxyuri").unwrap_or(EMULATOR_DEFAULT_URL);
        let endpoint = parse_url(&format!(
            "{}/{EMULATOR_ACCOUNT}",
            base.trim_end_matches('/')
        ))?;
        return Ok(Access {
            credential: Credential::AccountKey(Secret::new(EMULATOR_KEY)),
            account: Some(EMULATOR_ACCOUNT.to_string()),
            endpoint: Some(endpoint),
        });
    }
    let account = get("accountname").map(str::to_string);
    let credential = if let Some(key) = get("accountkey") {
        Credential::AccountKey(Secret::new(key))
    } else if let Some(sas) = get("sharedaccesssignature") {
        Credential::Sas(Secret::new(sas.trim_start_matches('?')))
    } else {
        return Err(err(
            "has neither AccountKey nor SharedAccessSignature nor UseDevelopmentStorage=true",
        ));
    };
    let endpoint = match (get("blobendpoint"), get("endpointsuffix"), &account) {
        (Some(url), _, _) => Some(parse_url(url)?),
        (None, Some(suffix), Some(account)) if suffix != "core.windows.net" => {
            let protocol = get("defaultendpointsprotocol").unwrap_or("https");
            Some(parse_url(&format!("{protocol}://{account}.blob.{suffix}"))?)
        }
        _ => None,
    };
    if account.is_none() && endpoint.is_none() {
        return Err(err("names no AccountName and no BlobEndpoint"));
    }
    Ok(Access {
        credential,
        account,
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_storage_means_azurite_with_the_well_known_key() {
        let a = resolve(
            &vars(&[(CONNECTION_STRING_VAR, "UseDevelopmentStorage=true")]),
            false,
        )
        .unwrap();
        assert_eq!(a.account.as_deref(), Some(EMULATOR_ACCOUNT));
        assert_eq!(
            a.endpoint.unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            a.credential,
            Credential::AccountKey(Secret::new(EMULATOR_KEY))
        );

        let a = parse_connection_string(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1:4321",
        )
        .unwrap();
        assert_eq!(
            a.endpoint.unwrap().as_str(),
            "http://127.0.0.1:4321/devstoreaccount1"
        );
    }

    #[test]
    fn full_connection_string_with_key_and_blob_endpoint() {
        let a = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(a.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(a.credential, Credential::AccountKey(Secret::new("a2V5")));
        assert_eq!(
            a.endpoint.unwrap().as_str(),
            "http://127.0.0.1:9/devstoreaccount1"
        );
    }

    #[test]
    fn sas_connection_string_keeps_equals_signs_and_sovereign_suffix() {
        let a = parse_connection_string(
            "AccountName=acct;SharedAccessSignature=?sv=2022&sig=ab%3D%3D;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(
            a.credential,
            Credential::Sas(Secret::new("sv=2022&sig=ab%3D%3D"))
        );
        assert_eq!(
            a.endpoint.unwrap().as_str(),
            "https://acct.blob.core.chinacloudapi.cn/"
        );
    }

    #[test]
    fn bad_connection_strings_say_what_is_missing() {
        let e = parse_connection_string("AccountName=acct")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AccountKey"), "{e}");
        let e = parse_connection_string("garbage").unwrap_err().to_string();
        assert!(e.contains("Key=Value"), "{e}");
    }

    #[test]
    fn precedence_key_then_sas_then_token_flows() {
        let key_and_sas = vars(&[(ACCOUNT_KEY_VAR, "a2V5"), (SAS_TOKEN_VAR, "?sv=1&sig=x")]);
        assert_eq!(
            resolve(&key_and_sas, false).unwrap().credential.kind(),
            "account key"
        );
        let sas = vars(&[(SAS_TOKEN_VAR, "?sv=1&sig=x")]);
        assert_eq!(
            resolve(&sas, false).unwrap().credential,
            Credential::Sas(Secret::new("sv=1&sig=x"))
        );
        let wi = vars(&[
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ]);
        assert_eq!(
            resolve(&wi, false).unwrap().credential.kind(),
            "workload identity"
        );
        assert_eq!(
            resolve(&vars(&[]), false).unwrap().credential.kind(),
            "managed identity"
        );
        assert_eq!(
            resolve(&key_and_sas, true).unwrap().credential,
            Credential::Anonymous
        );
    }

    #[test]
    fn the_authority_host_and_app_services_endpoint_reach_the_token_flows() {
        let wi = vars(&[
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
        ]);
        let Credential::Token(read) = resolve(&wi, false).unwrap().credential else {
            panic!("not a token credential");
        };
        assert_eq!(
            read["AZURE_AUTHORITY_HOST"].expose(),
            "https://login.microsoftonline.us/"
        );
        let app_service = vars(&[(IDENTITY_ENDPOINT_VAR, "http://127.0.0.1:41/token")]);
        let access = resolve(&app_service, false).unwrap();
        assert_eq!(access.credential.kind(), "managed identity");
        let Credential::Token(read) = access.credential else {
            panic!("not a token credential");
        };
        assert!(read.contains_key(IDENTITY_ENDPOINT_VAR));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let a = resolve(&vars(&[(ACCOUNT_KEY_VAR, "c3VwZXJzZWNyZXQ=")]), false).unwrap();
        let shown = format!("{a:?}");
        assert!(!shown.contains("c3VwZXJzZWNyZXQ"), "{shown}");
    }

    #[test]
    fn credentials_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(
            &path,
            "# test\nexport AZURE_STORAGE_ACCOUNT_KEY=\"a2V5\"\n\nAZURE_STORAGE_SAS_TOKEN='sv=1&sig=a=='\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_vars(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = load_vars(Some(&path)).unwrap();
        assert_eq!(v[ACCOUNT_KEY_VAR], "a2V5");
        assert_eq!(v[SAS_TOKEN_VAR], "sv=1&sig=a==");
    }
}
