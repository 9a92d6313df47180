//! The Blob REST calls adlsfs makes itself: List Blobs (object_store's delimiter listing
//! fails a whole directory on one odd name, and omits metadata), HEAD (object_store does
//! not surface Content-MD5) and Create Container (for fixtures). Authorised with the same
//! credential as the object_store client.

use super::list_xml::{self, parse_http_date, quoted_etag};
use super::shared_key;
use crate::digest::Md5Digest;
use crate::storage::{BlobMeta, DirListing, Metadata, Result, RetryPolicy, StorageError};
use bytes::Bytes;
use object_store::azure::{AzureCredential, AzureCredentialProvider};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::time::SystemTime;
use url::Url;

/// Service API version sent with every request (the one object_store uses too).
const API_VERSION: &str = "2023-11-03";
/// Largest page the service returns.
const PAGE_SIZE: &str = "5000";
const META_PREFIX: &str = "x-ms-meta-";

pub(super) enum RestAuth {
    SharedKey(Vec<u8>),
    Sas(Vec<(String, String)>),
    /// object_store's provider (Entra ID tokens, refreshed by it).
    Provider(AzureCredentialProvider),
    Anonymous,
}

pub(super) struct RestClient {
    pub http: reqwest::Client,
    pub account: String,
    pub container: String,
    /// The account's blob service URL (path-style for emulators).
    pub endpoint: Url,
    pub auth: RestAuth,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    pub fn container_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("endpoint is a base URL")
            .pop_if_empty()
            .push(&self.container);
        url
    }

    /// The URL of a blob, each name segment percent-encoded. Names with `.` or `..`
    /// segments can't be addressed: URL normalisation would turn them into other names.
    pub fn blob_url(&self, name: &str) -> Result<Url> {
        if name.split('/').any(|s| s == "." || s == "..") {
            return Err(StorageError::Client {
                what: name.to_string(),
                message: "a blob name with '.' or '..' segments cannot be addressed by URL".into(),
            });
        }
        let mut url = self.container_url();
        url.path_segments_mut()
            .expect("endpoint is a base URL")
            .extend(name.split('/'));
        Ok(url)
    }

    pub async fn list_dir(&self, prefix: &str) -> Result<DirListing> {
        let mut listing = DirListing::default();
        let mut marker: Option<String> = None;
        loop {
            let mut url = self.container_url();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("restype", "container")
                    .append_pair("comp", "list")
                    .append_pair("delimiter", "/")
                    .append_pair("include", "metadata")
                    .append_pair("maxresults", PAGE_SIZE);
                if !prefix.is_empty() {
                    q.append_pair("prefix", prefix);
                }
                if let Some(m) = &marker {
                    q.append_pair("marker", m);
                }
            }
            let what = format!("listing of {prefix:?}");
            let response = self.send(Method::GET, url, &what).await?;
            let body = response
                .text()
                .await
                .map_err(|e| transport_error(&self.endpoint, e))?;
            let page =
                list_xml::parse_list_page(&body).map_err(|message| StorageError::Client {
                    what: what.clone(),
                    message: format!("unreadable List Blobs response: {message}"),
                })?;
            listing.files.extend(page.blobs);
            listing.dirs.extend(page.prefixes);
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => return Ok(listing),
            }
        }
    }

    pub async fn head(&self, name: &str) -> Result<BlobMeta> {
        let url = self.blob_url(name)?;
        let response = self.send(Method::HEAD, url, name).await?;
        blob_meta_from_headers(name, response.headers()).map_err(|message| StorageError::Client {
            what: name.to_string(),
            message,
        })
    }

    /// Put Blob: one request, any blob name (odd ones included), user metadata as
    /// `x-ms-meta-*`. The service records Content-MD5 for such uploads.
    pub async fn put_blob(&self, name: &str, data: Bytes, metadata: &Metadata) -> Result<()> {
        let url = self.blob_url(name)?;
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        for (k, v) in metadata {
            let name =
                reqwest::header::HeaderName::from_bytes(format!("{META_PREFIX}{k}").as_bytes())
                    .map_err(|_| StorageError::Client {
                        what: name.to_string(),
                        message: format!("metadata key {k:?} is not a valid header name"),
                    })?;
            let value = HeaderValue::from_str(v).map_err(|_| StorageError::Client {
                what: name.to_string(),
                message: format!("metadata value for {k:?} is not a valid header value"),
            })?;
            headers.insert(name, value);
        }
        self.send_with(Method::PUT, url, name, headers, Some(data))
            .await?;
        Ok(())
    }

    /// Creates the container; `Ok(false)` when it already exists.
    pub async fn create_container(&self) -> Result<bool> {
        let mut url = self.container_url();
        url.query_pairs_mut().append_pair("restype", "container");
        match self.send(Method::PUT, url, &self.container).await {
            Ok(_) => Ok(true),
            Err(StorageError::Service { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends one request with retries of transient faults; non-2xx answers become typed errors.
    async fn send(&self, method: Method, url: Url, what: &str) -> Result<reqwest::Response> {
        self.send_with(method, url, what, HeaderMap::new(), None)
            .await
    }

    async fn send_with(
        &self,
        method: Method,
        url: Url,
        what: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response> {
        self.retry
            .run(|| {
                self.send_once(
                    method.clone(),
                    url.clone(),
                    what,
                    headers.clone(),
                    body.clone(),
                )
            })
            .await
    }

    async fn send_once(
        &self,
        method: Method,
        mut url: Url,
        what: &str,
        mut headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response> {
        headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert(
            "x-ms-date",
            HeaderValue::from_str(&date).expect("ASCII date"),
        );
        if method == Method::PUT {
            let length = body.as_ref().map_or(0, Bytes::len);
            headers.insert("content-length", HeaderValue::from(length));
        }
        self.authorize(&method, &mut url, &mut headers).await?;
        let mut request = self.http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&self.endpoint, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.error_from_response(response, what).await)
    }

    async fn authorize(
        &self,
        method: &Method,
        url: &mut Url,
        headers: &mut HeaderMap,
    ) -> Result<()> {
        let credential = match &self.auth {
            RestAuth::SharedKey(key) => {
                let value = shared_key::authorization(&self.account, key, method, url, headers);
                headers.insert("authorization", header_value(&value)?);
                return Ok(());
            }
            RestAuth::Sas(pairs) => {
                url.query_pairs_mut().extend_pairs(pairs);
                return Ok(());
            }
            RestAuth::Anonymous => return Ok(()),
            RestAuth::Provider(provider) => provider
                .get_credential()
                .await
                .map_err(|e| StorageError::Credentials(e.to_string()))?,
        };
        match credential.as_ref() {
            AzureCredential::BearerToken(token) => {
                headers.insert("authorization", header_value(&format!("Bearer {token}"))?);
            }
            AzureCredential::SASToken(pairs) => {
                url.query_pairs_mut().extend_pairs(pairs);
            }
            AzureCredential::AccessKey(_) => {
                return Err(StorageError::Credentials(
                    "an account key must be given to adlsfs directly, not through a token provider"
                        .into(),
                ))
            }
        }
        Ok(())
    }

    async fn error_from_response(&self, response: reqwest::Response, what: &str) -> StorageError {
        let status = response.status();
        let header_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        let code = header_code
            .or_else(|| xml_field(&body, "Code"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let message = xml_field(&body, "Message")
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StorageError::Auth {
                what: format!("{what} in {}/{}", self.account, self.container),
                status: status.as_u16(),
                code,
            },
            StatusCode::NOT_FOUND if code == "ContainerNotFound" => {
                StorageError::ContainerNotFound {
                    account: self.account.clone(),
                    container: self.container.clone(),
                }
            }
            StatusCode::NOT_FOUND => StorageError::NotFound {
                name: what.to_string(),
            },
            StatusCode::PRECONDITION_FAILED => StorageError::Changed {
                name: what.to_string(),
                etag: String::new(),
            },
            _ => StorageError::Service {
                what: what.to_string(),
                status: status.as_u16(),
                code,
                message,
            },
        }
    }
}

fn header_value(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value).map_err(|_| {
        StorageError::Credentials("credential is not a valid HTTP header value".into())
    })
}

/// A transport failure, its URL dropped (it may carry a SAS) and its cause chain kept.
pub(super) fn transport_error(endpoint: &Url, err: reqwest::Error) -> StorageError {
    let err = err.without_url();
    let mut cause = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        cause.push_str(": ");
        cause.push_str(&s.to_string());
        source = s.source();
    }
    StorageError::Unreachable {
        endpoint: endpoint.as_str().to_string(),
        attempts: 1,
        elapsed: std::time::Duration::ZERO,
        cause,
    }
}

/// The text of the first `<tag>` in a small XML error body.
fn xml_field(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim().to_string())
}

fn blob_meta_from_headers(name: &str, headers: &HeaderMap) -> Result<BlobMeta, String> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let size = get("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or("HEAD response without Content-Length")?;
    let etag = get("etag")
        .map(quoted_etag)
        .ok_or("HEAD response without ETag")?;
    let last_modified = match get("last-modified") {
        Some(v) => parse_http_date(v)?,
        None => SystemTime::UNIX_EPOCH,
    };
    let content_md5 = get("content-md5").and_then(|v| Md5Digest::from_base64(v).ok());
    let metadata: Metadata = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(META_PREFIX)?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    Ok(BlobMeta {
        name: name.to_string(),
        size,
        last_modified,
        etag,
        content_md5,
        metadata,
    })
}
