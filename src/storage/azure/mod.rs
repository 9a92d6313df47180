//! [`BlobStore`] on Azure Blob Storage: ranged reads through `object_store`; listing,
//! HEAD, ranged reads with the service's range MD5, the conditional writes and block
//! uploads, and container creation through adlsfs's own REST calls ([`rest`]), which can
//! put conditions and metadata on a block commit and return the new version from the
//! write's answer.

mod list_xml;
mod rest;
mod shared_key;

use super::credentials::{Access, Credential};
use super::{
    short_body, BlobMeta, BlobStore, BlobWrite, BlockId, ByteStream, CheckedRange, DirListing,
    ReadAccess, ReadUrlSigner, Result, RetryPolicy, StagedBlock, StorageError,
};
use crate::location::Location;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::StreamExt;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};
use rest::{RestAuth, RestClient};
use std::ops::Range;
use std::time::Duration;
use url::Url;

/// Bound on establishing a TCP/TLS connection; an unreachable endpoint fails fast and the
/// retry budget decides how long to keep trying.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything needed to talk to one container.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    /// The account's blob service URL, e.g. `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1` for Azurite.
    pub endpoint: Url,
    pub credential: Credential,
    pub retry: RetryPolicy,
}

impl AzureConfig {
    /// Combines a location, an optional endpoint override and the resolved credentials.
    /// The endpoint is, in order: the override, the connection string's, the location's,
    /// the public cloud's.
    pub fn new(
        location: &Location,
        endpoint_override: Option<Url>,
        access: Access,
        retry: RetryPolicy,
    ) -> Result<Self> {
        if let Some(account) = &access.account {
            if *account != location.account {
                return Err(StorageError::Credentials(format!(
                    "the connection string is for account {account:?} but the location names {:?}",
                    location.account
                )));
            }
        }
        let endpoint = match endpoint_override
            .or(access.endpoint)
            .or_else(|| location.endpoint.clone())
        {
            Some(url) => url,
            None => Url::parse(&format!(
                "https://{}.blob.core.windows.net",
                location.account
            ))
            .map_err(|e| StorageError::Config(e.to_string()))?,
        };
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err(StorageError::Config(format!(
                "endpoint {endpoint} must be an http(s) URL"
            )));
        }
        Ok(Self {
            account: location.account.clone(),
            container: location.container.clone(),
            endpoint,
            credential: access.credential,
            retry,
        })
    }
}

#[derive(Debug)]
pub struct AzureStore {
    store: MicrosoftAzure,
    rest: RestClient,
    /// [`Credential::kind`] of the credential in use.
    credential_kind: &'static str,
}

impl AzureStore {
    pub fn new(config: AzureConfig) -> Result<Self> {
        let credential_kind = config.credential.kind();
        let endpoint_text = config.endpoint.as_str().trim_end_matches('/').to_string();
        let allow_http = config.endpoint.scheme() == "http";
        let client_options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_read_timeout(config.retry.read_timeout);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: config.retry.initial_backoff,
                max_backoff: config.retry.max_backoff,
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: config.retry.budget,
        };
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(&config.account)
            .with_container_name(&config.container)
            .with_endpoint(endpoint_text)
            .with_allow_http(allow_http)
            .with_client_options(client_options)
            .with_retry(retry);
        let bad_credential = |e: object_store::Error| StorageError::Credentials(e.to_string());
        builder = match &config.credential {
            Credential::AccountKey(key) => builder.with_access_key(key.expose()),
            Credential::Sas(sas) => builder.with_sas_authorization(
                object_store::azure::split_sas(sas.expose()).map_err(bad_credential)?,
            ),
            Credential::Anonymous => builder.with_skip_signature(true),
            Credential::Token(vars) => {
                for (name, value) in vars {
                    let v = value.expose();
                    builder = match name.as_str() {
                        "AZURE_CLIENT_ID" => builder.with_client_id(v),
                        "AZURE_TENANT_ID" => builder.with_tenant_id(v),
                        "AZURE_FEDERATED_TOKEN_FILE" => builder.with_federated_token_file(v),
                        "AZURE_CLIENT_SECRET" => builder.with_client_secret(v),
                        "AZURE_USE_AZURE_CLI" => builder.with_use_azure_cli(v == "true"),
                        "AZURE_MSI_ENDPOINT" | "IDENTITY_ENDPOINT" => builder.with_msi_endpoint(v),
                        // object_store appends `/<tenant>`; the AKS webhook's value ends in `/`.
                        "AZURE_AUTHORITY_HOST" => {
                            builder.with_authority_host(v.trim_end_matches('/'))
                        }
                        _ => builder,
                    };
                }
                builder
            }
        };
        let store = builder.build().map_err(|e| match &config.credential {
            Credential::AccountKey(_) => StorageError::Credentials(format!(
                "the account key is not usable (it must be the base64 key from the portal): {e}"
            )),
            _ => StorageError::Config(e.to_string()),
        })?;
        let auth = match &config.credential {
            Credential::AccountKey(key) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(key.expose())
                    .map_err(|_| {
                        StorageError::Credentials("the account key is not base64".into())
                    })?;
                RestAuth::SharedKey(bytes)
            }
            Credential::Sas(sas) => {
                RestAuth::Sas(object_store::azure::split_sas(sas.expose()).map_err(bad_credential)?)
            }
            Credential::Anonymous => RestAuth::Anonymous,
            Credential::Token(_) => RestAuth::Provider(store.credentials().clone()),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| StorageError::Config(e.to_string()))?;
        let rest = RestClient {
            http,
            account: config.account,
            container: config.container,
            endpoint: config.endpoint,
            auth,
            retry: config.retry,
            token_source: config.credential.token_source(),
        };
        Ok(Self {
            store,
            rest,
            credential_kind,
        })
    }

    /// Creates the container if it does not exist; true when it was created.
    pub async fn create_container(&self) -> Result<bool> {
        self.rest.create_container().await
    }

    /// The blob's URL without any credential.
    /// Whether requests go over TLS (else bytes served early need range checks).
    pub fn is_https(&self) -> bool {
        self.rest.endpoint.scheme() == "https"
    }

    pub fn blob_url(&self, name: &str) -> Result<Url> {
        self.rest.blob_url(name)
    }

    /// A GET of `range` (the whole blob for `None`), only while the ETag is `etag`.
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        etag: &str,
    ) -> Result<object_store::GetResult> {
        let options = GetOptions {
            if_match: Some(etag.to_string()),
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        self.store
            .get_opts(&self.object_path(name)?, options)
            .await
            .map_err(|e| self.map_error(name, e))
    }

    fn object_path(&self, name: &str) -> Result<ObjectPath> {
        ObjectPath::parse(name).map_err(|e| StorageError::Client {
            what: name.to_string(),
            message: format!("blob name cannot be addressed: {e}"),
        })
    }

    fn map_error(&self, name: &str, err: object_store::Error) -> StorageError {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => StorageError::NotFound {
                name: name.to_string(),
            },
            E::Precondition { .. } => StorageError::Changed {
                name: name.to_string(),
                etag: String::new(),
            },
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
                self.rest.refused(name, 403, "AuthenticationFailed".into())
            }
            E::Generic { source, .. } => self.map_generic(name, source),
            other => StorageError::Client {
                what: name.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// object_store has already retried; a connection-level cause in the chain means the
    /// endpoint could not be reached, anything else is reported as the service's answer.
    fn map_generic(
        &self,
        name: &str,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> StorageError {
        use object_store::client::{HttpError, HttpErrorKind};
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(err) = cause {
            // The credential's token request failed (object_store keeps that error type
            // private: its text says so).
            if err.to_string().contains("Error performing token request") {
                return self.rest.token_error(err);
            }
            if let Some(http) = err.downcast_ref::<HttpError>() {
                if matches!(
                    http.kind(),
                    HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
                ) {
                    return StorageError::Unreachable {
                        endpoint: self.rest.endpoint.to_string(),
                        attempts: 1,
                        elapsed: Duration::ZERO,
                        cause: source.to_string(),
                    };
                }
            }
            // The service's answer, when retries of it ran out (object_store keeps the
            // error type private: its text names the status).
            if let Some(status) = answered_status(&err.to_string()) {
                return StorageError::Service {
                    what: name.to_string(),
                    status,
                    code: reqwest::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("")
                        .to_string(),
                    message: source.to_string(),
                };
            }
            cause = err.source();
        }
        StorageError::Client {
            what: name.to_string(),
            message: source.to_string(),
        }
    }
}

/// The HTTP status in object_store's "Server returned non-2xx status code: 503 ..." text.
fn answered_status(text: &str) -> Option<u16> {
    let rest = text.split("non-2xx status code: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

#[async_trait]
impl BlobStore for AzureStore {
    async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        self.rest.list_dir(prefix).await
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        self.rest.head(name).await
    }

    async fn read(&self, name: &str, range: Option<Range<u64>>, etag: &str) -> Result<Bytes> {
        let expected = range.as_ref().map(|r| r.end - r.start);
        let result = self.get(name, range, etag).await?;
        let bytes = result.bytes().await.map_err(|e| self.map_error(name, e))?;
        if let Some(expected) = expected {
            if bytes.len() as u64 != expected {
                return Err(short_body(name, expected, bytes.len() as u64));
            }
        }
        Ok(bytes)
    }

    async fn read_stream(&self, name: &str, range: Range<u64>, etag: &str) -> Result<ByteStream> {
        let result = self.get(name, Some(range), etag).await?;
        let (name, endpoint) = (name.to_string(), self.rest.endpoint.to_string());
        Ok(result
            .into_stream()
            .map(move |piece| {
                piece.map_err(|e| StorageError::Unreachable {
                    endpoint: endpoint.clone(),
                    attempts: 1,
                    elapsed: Duration::ZERO,
                    cause: format!("reading the body of {name}: {e}"),
                })
            })
            .boxed())
    }

    /// Through adlsfs's own REST client: object_store can't send
    /// `x-ms-range-get-content-md5` nor surface the answer's `Content-MD5`.
    async fn read_range_md5(
        &self,
        name: &str,
        range: Range<u64>,
        etag: &str,
    ) -> Result<CheckedRange> {
        self.rest.get_range_md5(name, range, etag).await
    }

    async fn put_if(&self, write: &BlobWrite, data: Bytes) -> Result<BlobMeta> {
        self.rest.put_blob(write, data).await
    }

    async fn put_block(&self, name: &str, id: BlockId, data: Bytes) -> Result<StagedBlock> {
        self.rest.put_block(name, id, data).await
    }

    async fn put_block_list(&self, write: &BlobWrite, blocks: &[StagedBlock]) -> Result<BlobMeta> {
        self.rest.put_block_list(write, blocks).await
    }
}

#[async_trait]
impl ReadUrlSigner for AzureStore {
    /// A URL that lets its holder read one blob for `valid_for`, for tools like azcopy
    /// that take URLs: a service SAS minted from an account key, a user-delegation SAS
    /// from Entra ID credentials, the configured SAS, or the plain URL when anonymous.
    async fn read_url(&self, name: &str, valid_for: Duration) -> Result<Url> {
        let mut url = self.rest.blob_url(name)?;
        match &self.rest.auth {
            RestAuth::Anonymous => Ok(url),
            RestAuth::Sas(pairs) => {
                url.query_pairs_mut().extend_pairs(pairs);
                Ok(url)
            }
            RestAuth::SharedKey(key) => {
                let start = chrono::Utc::now() - chrono::Duration::minutes(5);
                let expiry = chrono::Utc::now()
                    + chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::hours(1));
                let pairs = shared_key::blob_read_sas(
                    &self.rest.account,
                    key,
                    &self.rest.container,
                    name,
                    start,
                    expiry,
                );
                url.query_pairs_mut().extend_pairs(pairs);
                Ok(url)
            }
            RestAuth::Provider(_) => {
                // A user-delegation SAS needs object_store's delegation key.
                use object_store::signer::Signer;
                let path = self.object_path(name)?;
                self.store
                    .signed_url(reqwest::Method::GET, &path, valid_for)
                    .await
                    .map_err(|e| self.map_error(name, e))
            }
        }
    }

    async fn read_access(&self, name: &str, valid_for: Duration) -> Result<ReadAccess> {
        match self.read_url(name, valid_for).await {
            Ok(url) => Ok(ReadAccess::Url(url)),
            Err(e) => match self.azcopy_login_type() {
                Some(login_type) => {
                    tracing::info!(blob = %name, error = %e, login_type, "no SAS could be minted; azcopy logs in itself");
                    Ok(ReadAccess::AutoLogin {
                        url: self.rest.blob_url(name)?,
                        login_type,
                    })
                }
                None => Err(e),
            },
        }
    }
}

impl AzureStore {
    /// The container URL with a SAS to list and read it, for tools like curl (benchmarks).
    /// Only with an account key, which can sign it.
    pub fn container_read_url(&self, valid_for: Duration) -> Result<Url> {
        let RestAuth::SharedKey(key) = &self.rest.auth else {
            return Err(StorageError::Credentials(
                "a container SAS can only be minted from an account key".into(),
            ));
        };
        let now = chrono::Utc::now();
        let expiry =
            now + chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::hours(1));
        let mut url = self.rest.container_url();
        url.query_pairs_mut()
            .extend_pairs(shared_key::container_read_sas(
                &self.rest.account,
                key,
                &self.rest.container,
                now - chrono::Duration::minutes(5),
                expiry,
            ));
        Ok(url)
    }

    /// azcopy's own login for this store's Entra ID credential, if it has one.
    fn azcopy_login_type(&self) -> Option<&'static str> {
        match self.credential_kind {
            "workload identity" => Some("WORKLOAD"),
            "managed identity" => Some("MSI"),
            "Azure CLI" => Some("AZCLI"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_of_a_service_answer_is_read_from_object_stores_text() {
        let text = "Error performing GET http://x/c/b in 2s, after 3 retries - Server returned non-2xx status code: 503 Service Unavailable: busy";
        assert_eq!(super::answered_status(text), Some(503));
        assert_eq!(
            super::answered_status("Server returned non-2xx status code: 4"),
            None
        );
        assert_eq!(super::answered_status("connection reset"), None);
    }
}
