//! The Blob REST calls adlsfs makes itself: List Blobs (object_store's delimiter listing
//! fails a whole directory on one odd name, and omits metadata), HEAD (object_store does
//! not surface Content-MD5), ranged GETs with the range's MD5 (object_store can't ask for
//! it), the writes (Put Blob, Put Block, Put Block List, with conditions object_store
//! cannot put on a block commit) and Create Container (for fixtures). Authorised with the
//! same credential as the object_store client.
//!
//! Retried conditional writes: a write whose answer was lost (a broken connection, a
//! timeout, a 5xx) is retried, and the retry may then meet the version its own earlier
//! attempt wrote: `If-None-Match: *` answers "already exists", `If-Match` answers 412.
//! Only after such a retry, the blob is read back with one HEAD, and the write counts as
//! done when the blob holds what was sent: the same size and metadata, and either an
//! xxh3 digest in that metadata or (Put Blob) the same Content-MD5. Otherwise the
//! condition's error stands; without a digest an own write can't be told from another's.

use super::list_xml::{self, parse_http_date, quoted_etag};
use super::shared_key;
use crate::digest::{self, Md5Digest, XXH3_METADATA_KEY};
use crate::storage::credentials::TokenSource;
use crate::storage::{
    check_md5_range, short_body, BlobMeta, BlobWrite, BlockId, CheckedRange, DirListing, Metadata,
    Result, RetryPolicy, StagedBlock, StorageError, WriteCondition,
};
use bytes::{Bytes, BytesMut};
use object_store::azure::{AzureCredential, AzureCredentialProvider};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::ops::Range;
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
    /// Where an Entra ID credential's tokens come from, for its errors.
    pub token_source: Option<TokenSource>,
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

    /// Get Blob of `range` (1 byte to [`crate::storage::MAX_CHECKED_RANGE`], else refused
    /// without a request) with `If-Match: etag` and `x-ms-range-get-content-md5: true`, the
    /// body read whole, and the answer's `Content-MD5` as it came (`None` when absent; a
    /// malformed one is an error). A body of the wrong length is the transient
    /// `ShortBody`; the whole exchange, body included, is retried on transient faults.
    pub async fn get_range_md5(
        &self,
        name: &str,
        range: Range<u64>,
        etag: &str,
    ) -> Result<CheckedRange> {
        check_md5_range(name, &range)?;
        let url = self.blob_url(name)?;
        let (first, last) = (range.start, range.end - 1);
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::RANGE,
            HeaderValue::from_str(&format!("bytes={first}-{last}")).expect("ASCII range"),
        );
        headers.insert(
            "x-ms-range-get-content-md5",
            HeaderValue::from_static("true"),
        );
        headers.insert(
            "if-match",
            HeaderValue::from_str(etag).map_err(|_| StorageError::Client {
                what: name.to_string(),
                message: format!("ETag {etag:?} is not a valid header value"),
            })?,
        );
        let expected = range.end - range.start;
        self.retry
            .run(|| async {
                let response = self
                    .send_once(Method::GET, url.clone(), name, headers.clone(), None)
                    .await?;
                let unreadable = |message| StorageError::Client {
                    what: name.to_string(),
                    message,
                };
                let md5 = range_md5(response.headers()).map_err(unreadable)?;
                let content_range = response.headers().get("content-range").cloned();
                let data = self.body(name, response, expected).await?;
                check_content_range(content_range.as_ref(), first, last).map_err(unreadable)?;
                Ok(CheckedRange { data, md5 })
            })
            .await
    }

    /// A response body of `expected` bytes, each piece awaited at most the read timeout
    /// (a stalled connection is a transient fault); more or fewer bytes are `ShortBody`.
    async fn body(
        &self,
        name: &str,
        mut response: reqwest::Response,
        expected: u64,
    ) -> Result<Bytes> {
        let mut data = BytesMut::with_capacity(expected as usize);
        loop {
            let piece = tokio::time::timeout(self.retry.read_timeout, response.chunk())
                .await
                .map_err(|_| StorageError::Unreachable {
                    endpoint: self.endpoint.to_string(),
                    attempts: 1,
                    elapsed: self.retry.read_timeout,
                    cause: format!(
                        "the body of {name} stalled for {:?}",
                        self.retry.read_timeout
                    ),
                })?
                .map_err(|e| transport_error(&self.endpoint, e))?;
            let Some(piece) = piece else { break };
            if (data.len() + piece.len()) as u64 > expected {
                return Err(short_body(
                    name,
                    expected,
                    (data.len() + piece.len()) as u64,
                ));
            }
            data.extend_from_slice(&piece);
        }
        if data.len() as u64 != expected {
            return Err(short_body(name, expected, data.len() as u64));
        }
        Ok(data.freeze())
    }

    /// Put Blob: one request, any blob name (odd ones included), user metadata as
    /// `x-ms-meta-*`, `Content-MD5` sent so the service checks the body and records it.
    pub async fn put_blob(&self, write: &BlobWrite, data: Bytes) -> Result<BlobMeta> {
        let md5 = digest::md5(&data);
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        headers.insert("content-md5", header_value(&md5.to_base64())?);
        let version = NewVersion {
            write,
            size: data.len() as u64,
            content_md5: Some(md5),
        };
        self.commit(version, self.blob_url(&write.name)?, headers, data)
            .await
    }

    /// Put Block: stages one block; retried freely (staging the same id again replaces it).
    pub async fn put_block(&self, name: &str, id: BlockId, data: Bytes) -> Result<StagedBlock> {
        let mut url = self.blob_url(name)?;
        url.query_pairs_mut()
            .append_pair("comp", "block")
            .append_pair("blockid", id.as_str());
        let size = data.len() as u64;
        self.send_with(Method::PUT, url, name, HeaderMap::new(), Some(data))
            .await
            .0?;
        Ok(StagedBlock { id, size })
    }

    /// Put Block List: commits `blocks` (each the latest staged or committed block of that
    /// id) with the metadata and the condition in the same request.
    pub async fn put_block_list(
        &self,
        write: &BlobWrite,
        blocks: &[StagedBlock],
    ) -> Result<BlobMeta> {
        let mut url = self.blob_url(&write.name)?;
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for block in blocks {
            body.push_str("<Latest>");
            body.push_str(block.id.as_str());
            body.push_str("</Latest>");
        }
        body.push_str("</BlockList>");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/xml"));
        let version = NewVersion {
            write,
            size: blocks.iter().map(|b| b.size).sum(),
            content_md5: None,
        };
        self.commit(version, url, headers, Bytes::from(body)).await
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

    /// Sends one write (with `headers`, plus the write's condition and metadata) and
    /// returns the version it made, from the answer's ETag and Last-Modified; a failed
    /// condition becomes the condition's error, unless this was a retry and the blob turns
    /// out to hold what was sent (see the module docs).
    async fn commit(
        &self,
        version: NewVersion<'_>,
        url: Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<BlobMeta> {
        let (name, condition) = (version.write.name.as_str(), &version.write.condition);
        headers.extend(write_headers(version.write)?);
        let (sent, attempts) = self
            .send_with(Method::PUT, url, name, headers, Some(body))
            .await;
        match sent {
            Ok(response) => version.completed_by(response.headers()),
            Err(e) if is_condition_failure(&e, condition) => {
                if attempts > 1 {
                    match self.head(name).await {
                        Ok(head) if version.landed_as(&head) => {
                            tracing::info!(
                                blob = name,
                                attempts,
                                "a retried conditional write had landed on an earlier attempt"
                            );
                            return Ok(head);
                        }
                        _ => {}
                    }
                }
                Err(condition.failure(name))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one request with retries of transient faults; non-2xx answers become typed errors.
    async fn send(&self, method: Method, url: Url, what: &str) -> Result<reqwest::Response> {
        self.send_with(method, url, what, HeaderMap::new(), None)
            .await
            .0
    }

    /// [`RestClient::send`] with headers and a body, also telling how many attempts were
    /// made.
    async fn send_with(
        &self,
        method: Method,
        url: Url,
        what: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> (Result<reqwest::Response>, u32) {
        let mut attempts = 0u32;
        let result = self
            .retry
            .run(|| {
                attempts += 1;
                self.send_once(
                    method.clone(),
                    url.clone(),
                    what,
                    headers.clone(),
                    body.clone(),
                )
            })
            .await;
        (result, attempts)
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
                .map_err(|e| self.token_error(&e))?,
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

    /// The service refused `what` (401/403): an expired SAS says so, with its expiry;
    /// anything else is [`StorageError::Auth`].
    pub fn refused(&self, what: &str, status: u16, code: String) -> StorageError {
        let what = format!("{what} in {}/{}", self.account, self.container);
        if let RestAuth::Sas(pairs) = &self.auth {
            let expiry = pairs
                .iter()
                .find(|(k, _)| k == "se")
                .map(|(_, v)| v.as_str());
            if let Some(se) = expiry.filter(|se| sas_expired(se, chrono::Utc::now())) {
                return StorageError::SasExpired {
                    what,
                    expiry: se.to_string(),
                };
            }
        }
        StorageError::Auth { what, status, code }
    }

    /// A failed token request, naming the credential, its endpoint and what to check;
    /// the cause is the innermost error (object_store's text repeats the endpoint).
    pub fn token_error(&self, err: &(dyn std::error::Error + 'static)) -> StorageError {
        let mut cause = err;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        match &self.token_source {
            Some(source) => StorageError::TokenRequest {
                kind: source.kind,
                endpoint: source.endpoint.clone(),
                cause: cause.to_string(),
                check: source.check,
            },
            None => StorageError::Credentials(err.to_string()),
        }
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
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.refused(what, status.as_u16(), code)
            }
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

/// Whether `err` is `condition` failing: a 412 (Azurite answers it to `If-Match` on a
/// missing blob too; a 404 is taken the same way), or the 409 `BlobAlreadyExists` that
/// `If-None-Match: *` gets on an existing blob from Put Blob and Put Block List alike.
fn is_condition_failure(err: &StorageError, condition: &WriteCondition) -> bool {
    match (err, condition) {
        (_, WriteCondition::Overwrite) => false,
        (StorageError::Changed { .. }, _) => true,
        (StorageError::NotFound { .. }, WriteCondition::IfMatch(_)) => true,
        (StorageError::Service { status, code, .. }, _) => {
            *status == 409 && code == "BlobAlreadyExists"
        }
        _ => false,
    }
}

/// The request headers every write carries: its condition and the user metadata.
fn write_headers(write: &BlobWrite) -> Result<HeaderMap> {
    let name = &write.name;
    let mut headers = HeaderMap::new();
    match &write.condition {
        WriteCondition::Overwrite => {}
        WriteCondition::IfNoneMatch => {
            headers.insert("if-none-match", HeaderValue::from_static("*"));
        }
        WriteCondition::IfMatch(etag) => {
            let value = HeaderValue::from_str(etag).map_err(|_| StorageError::Client {
                what: name.to_string(),
                message: format!("ETag {etag:?} is not a valid header value"),
            })?;
            headers.insert("if-match", value);
        }
    }
    for (k, v) in &write.metadata {
        let header =
            reqwest::header::HeaderName::from_bytes(format!("{META_PREFIX}{k}").as_bytes())
                .map_err(|_| StorageError::Client {
                    what: name.to_string(),
                    message: format!("metadata key {k:?} is not a valid header name"),
                })?;
        let value = HeaderValue::from_str(v).map_err(|_| StorageError::Client {
            what: name.to_string(),
            message: format!("metadata value for {k:?} is not a valid header value"),
        })?;
        headers.insert(header, value);
    }
    Ok(headers)
}

/// What a write is about to make, known before the service answers.
struct NewVersion<'a> {
    write: &'a BlobWrite,
    size: u64,
    /// Of the whole blob, for a Put Blob; a block list has none.
    content_md5: Option<Md5Digest>,
}

impl NewVersion<'_> {
    /// The version, completed with the ETag and Last-Modified of the write's answer.
    /// The answer's own Content-MD5 is not used: for a block list it is the digest of the
    /// XML request body, not of the blob.
    fn completed_by(self, headers: &HeaderMap) -> Result<BlobMeta> {
        let (etag, last_modified) =
            version_from_headers(headers).map_err(|message| StorageError::Client {
                what: self.write.name.clone(),
                message,
            })?;
        Ok(BlobMeta {
            name: self.write.name.clone(),
            size: self.size,
            last_modified,
            etag,
            content_md5: self.content_md5,
            metadata: self.write.metadata.clone(),
        })
    }

    /// Whether `head` is this write, landed by an earlier attempt: same size and
    /// metadata, and a digest that identifies the content.
    fn landed_as(&self, head: &BlobMeta) -> bool {
        let metadata = &self.write.metadata;
        let identified = metadata.contains_key(XXH3_METADATA_KEY)
            || (self.content_md5.is_some() && head.content_md5 == self.content_md5);
        let new_version = match &self.write.condition {
            WriteCondition::IfMatch(etag) => head.etag != *etag,
            _ => true,
        };
        identified && new_version && head.size == self.size && head.metadata == *metadata
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

/// ETag and Last-Modified of a blob version, from a HEAD's or a write's answer.
fn version_from_headers(headers: &HeaderMap) -> Result<(String, SystemTime), String> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let etag = get("etag")
        .map(quoted_etag)
        .ok_or("response without ETag")?;
    let last_modified = match get("last-modified") {
        Some(v) => parse_http_date(v)?,
        None => SystemTime::UNIX_EPOCH,
    };
    Ok((etag, last_modified))
}

/// The `Content-MD5` of a ranged answer: `None` when absent, an error when it is not the
/// base64 of 16 bytes (a claimed digest that can't be checked is not "no digest").
fn range_md5(headers: &HeaderMap) -> Result<Option<Md5Digest>, String> {
    let Some(value) = headers.get("content-md5") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "the Content-MD5 header is not ASCII".to_string())?;
    Md5Digest::from_base64(text)
        .map(Some)
        .map_err(|e| format!("unreadable Content-MD5 {text:?}: {e}"))
}

/// A `Content-Range` in the answer must name the bytes asked for (`bytes first-last/size`):
/// an MD5 of other bytes would check the wrong extent. An answer without one (a 200 for
/// the whole blob) is left to the length check.
fn check_content_range(value: Option<&HeaderValue>, first: u64, last: u64) -> Result<(), String> {
    let Some(value) = value else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let served = text
        .strip_prefix("bytes ")
        .and_then(|r| r.split('/').next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match served {
        Some((a, b)) if (a, b) == (first, last) => Ok(()),
        _ => Err(format!(
            "asked for bytes {first}-{last}, the answer's Content-Range is {text:?}"
        )),
    }
}

fn blob_meta_from_headers(name: &str, headers: &HeaderMap) -> Result<BlobMeta, String> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let size = get("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or("HEAD response without Content-Length")?;
    let (etag, last_modified) = version_from_headers(headers)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_range_md5_is_read_as_sent_and_a_malformed_one_is_an_error() {
        let md5 = digest::md5(b"abc");
        let headers = with("content-md5", &md5.to_base64());
        assert_eq!(range_md5(&headers), Ok(Some(md5)));
        assert_eq!(range_md5(&HeaderMap::new()), Ok(None));
        for bad in ["not base64!", "YWJj", ""] {
            assert!(range_md5(&with("content-md5", bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_content_range_must_be_the_range_asked_for() {
        let value = HeaderValue::from_static("bytes 10-19/100");
        assert!(check_content_range(Some(&value), 10, 19).is_ok());
        assert!(check_content_range(Some(&value), 0, 9).is_err());
        assert!(
            check_content_range(Some(&HeaderValue::from_static("bytes */100")), 10, 19).is_err()
        );
        assert!(check_content_range(None, 10, 19).is_ok());
    }
}

/// Whether a SAS `se=` value (ISO 8601, as `2026-12-01T12:00:00Z` or a date) lies before
/// `now`; an unreadable one is not known to have expired.
fn sas_expired(se: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    let at = chrono::DateTime::parse_from_rfc3339(se)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(se, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        });
    at.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod sas_expiry_tests {
    use super::sas_expired;

    #[test]
    fn a_sas_expiry_is_read_in_both_forms_and_an_odd_one_is_not_expired() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert!(sas_expired("2026-12-01T11:59:59Z", now));
        assert!(!sas_expired("2026-12-01T12:00:01Z", now));
        assert!(sas_expired("2026-11-30", now));
        assert!(!sas_expired("2026-12-02", now));
        assert!(!sas_expired("soon", now));
    }
}
