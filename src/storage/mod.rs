//! The object store as adlsfs sees it: one small trait, [`BlobStore`], with an Azure
//! implementation ([`azure::AzureStore`]) and an in-memory fake ([`memory::MemoryStore`]).
//! Nothing outside this module sees `object_store` or HTTP types.
//!
//! Writes are conditional ([`WriteCondition`]) so that a commit never silently replaces a
//! blob someone else wrote, and every write returns the new version's [`BlobMeta`] from
//! the service's answer, so no HEAD follows it. Large files go up as blocks
//! ([`BlobStore::put_block`], [`BlobStore::put_block_list`]), which serves any blob name
//! with bounded memory.

pub mod azure;
mod blocks;
pub mod credentials;
pub mod faulty;
pub mod memory;
mod retry;

use crate::digest::{DigestError, Md5Digest, Xxh3Digest, XXH3_METADATA_KEY};
use crate::error::{io_kind, Classify, ErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use blocks::{BlockId, StagedBlock, UPLOAD_PART_SIZE};
pub use retry::{jittered, RetryPolicy, Retryable};

/// Longest range [`BlobStore::read_range_md5`] reads: the service computes the MD5 of a
/// range only up to 4 MiB.
pub const MAX_CHECKED_RANGE: u64 = 4 << 20;

/// User metadata of a blob (`x-ms-meta-*`), keys as stored.
pub type Metadata = BTreeMap<String, String>;

/// A body arriving in pieces.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What a write makes and when it may: the blob, the user metadata committed with its
/// content (in the same request, so the digest is never missing from a visible blob),
/// and the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobWrite {
    pub name: String,
    pub metadata: Metadata,
    pub condition: WriteCondition,
}

impl BlobWrite {
    pub fn new(name: &str, metadata: &Metadata, condition: WriteCondition) -> Self {
        Self {
            name: name.to_string(),
            metadata: metadata.clone(),
            condition,
        }
    }

    /// Creates or replaces, whatever is there.
    pub fn overwrite(name: &str, metadata: &Metadata) -> Self {
        Self::new(name, metadata, WriteCondition::Overwrite)
    }
}

/// What the service knows about one blob, from a listing or a HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Full blob name inside the container.
    pub name: String,
    pub size: u64,
    pub last_modified: SystemTime,
    /// ETag in its HTTP form, with the quotes (`"0x8DC..."`).
    pub etag: String,
    pub content_md5: Option<Md5Digest>,
    pub metadata: Metadata,
}

impl BlobMeta {
    /// The xxh3_128 digest recorded in metadata, if any. A malformed value is an error, not
    /// "no digest": the blob claims a digest that can't be checked.
    pub fn xxh3(&self) -> Result<Option<Xxh3Digest>, DigestError> {
        self.metadata
            .get(XXH3_METADATA_KEY)
            .map(|v| Xxh3Digest::from_base64(v))
            .transpose()
    }
}

/// The bytes of one range and the MD5 the service computed for that range
/// (`x-ms-range-get-content-md5`), as it returned them, unchecked.
///
/// `md5` is the answer's `Content-MD5`, `None` when the answer had none. `None` never means
/// "nothing to check": a caller that needs the range checked must treat it as a failed
/// check. (Azurite, seen here, omits the header without an error for a range that serves
/// more than 4 MiB; see [`BlobStore::read_range_md5`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRange {
    pub data: Bytes,
    pub md5: Option<Md5Digest>,
}

/// One level of a hierarchical listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Blobs directly under the prefix.
    pub files: Vec<BlobMeta>,
    /// Sub-prefixes, each the full prefix ending in `/` (as the service returns them).
    pub dirs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {name:?} not found")]
    NotFound { name: String },
    #[error("container {container:?} not found in account {account:?}")]
    ContainerNotFound { account: String, container: String },
    #[error("blob {name:?} changed on the server (its ETag is no longer {etag})")]
    Changed { name: String, etag: String },
    #[error("blob {name:?} already exists")]
    AlreadyExists { name: String },
    #[error("access to {what} was refused ({status} {code}): check the credentials (AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_CONNECTION_STRING, workload or managed identity) and that they grant read access: an Entra ID identity needs the role Storage Blob Data Reader on the account or container (Owner and Contributor are not enough), a SAS needs sp=rl")]
    Auth {
        what: String,
        status: u16,
        code: String,
    },
    #[error("could not reach the storage endpoint {endpoint} after {attempts} attempt(s) over {elapsed:?}: {cause}")]
    Unreachable {
        endpoint: String,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },
    #[error("the storage service answered {status} {code} for {what}: {message}")]
    Service {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("access to {what} was refused: the SAS token expired at {expiry} (its se=): mint a new one (sp=rl, a later se=) and put it in AZURE_STORAGE_SAS_TOKEN or the --credentials-file")]
    SasExpired { what: String, expiry: String },
    #[error("could not get an Entra ID token ({kind}) from {endpoint}: {cause}. Check {check}")]
    TokenRequest {
        kind: &'static str,
        endpoint: String,
        cause: String,
        check: &'static str,
    },
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("reading {path}: {source}")]
    LocalIo {
        path: String,
        source: std::io::Error,
    },
    #[error("storage client error for {what}: {message}")]
    Client { what: String, message: String },
}

impl StorageError {
    /// True for faults worth retrying (throttling, server errors, broken connections).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

impl Classify for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StorageError::NotFound { .. } | StorageError::ContainerNotFound { .. } => {
                ErrorKind::NotFound
            }
            StorageError::Changed { .. } => ErrorKind::Changed,
            StorageError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            StorageError::Auth { .. }
            | StorageError::SasExpired { .. }
            | StorageError::TokenRequest { .. } => ErrorKind::Auth,
            StorageError::Unreachable { .. } => ErrorKind::Transient,
            // The body ended before the range did: the connection gave out, a retry resumes.
            StorageError::Service { code, .. } if code == "ShortBody" => ErrorKind::Transient,
            StorageError::Service { status, .. }
                if *status == 408 || *status == 429 || *status >= 500 =>
            {
                ErrorKind::Transient
            }
            StorageError::Credentials(_) | StorageError::Config(_) => ErrorKind::Config,
            StorageError::LocalIo { source, .. } => io_kind(source),
            StorageError::Service { .. } | StorageError::Client { .. } => ErrorKind::Other,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The transient error of a ranged read whose body was not the range's length (the
/// connection gave out, or the service served another extent): a retry reads it again.
pub(crate) fn short_body(name: &str, expected: u64, received: u64) -> StorageError {
    StorageError::Service {
        what: name.to_string(),
        status: 206,
        code: "ShortBody".into(),
        message: format!("expected {expected} bytes, received {received}"),
    }
}

/// Refuses a range [`BlobStore::read_range_md5`] must not be asked for: an empty one (no
/// `Range` header can name it) or one longer than [`MAX_CHECKED_RANGE`]. Either is a
/// programming error of the caller, not something to retry.
pub(crate) fn check_md5_range(name: &str, range: &Range<u64>) -> Result<()> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 || len > MAX_CHECKED_RANGE {
        return Err(StorageError::Client {
            what: name.to_string(),
            message: format!(
                "range {range:?} ({len} bytes) cannot be read with its MD5: it must hold 1 to {MAX_CHECKED_RANGE} bytes"
            ),
        });
    }
    Ok(())
}

/// What must hold on the service for a write to take effect. A write whose condition
/// fails changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditional: create the blob or replace whatever version is there.
    Overwrite,
    /// `If-None-Match: *`: only create a new blob. Fails with
    /// [`StorageError::AlreadyExists`] when a blob of that name exists.
    IfNoneMatch,
    /// `If-Match: <etag>`: only replace the version with this ETag (quoted, as in
    /// [`BlobMeta::etag`]). Fails with [`StorageError::Changed`] when the blob has another
    /// ETag or no longer exists.
    IfMatch(String),
}

impl WriteCondition {
    /// Whether the condition holds for a blob whose current ETag is `current` (`None`
    /// when there is no such blob); the condition's error when it does not.
    pub fn check(&self, name: &str, current: Option<&str>) -> Result<()> {
        let holds = match self {
            WriteCondition::Overwrite => true,
            WriteCondition::IfNoneMatch => current.is_none(),
            WriteCondition::IfMatch(etag) => current == Some(etag.as_str()),
        };
        if holds {
            Ok(())
        } else {
            Err(self.failure(name))
        }
    }

    /// The error a failed condition gives for blob `name`.
    pub(crate) fn failure(&self, name: &str) -> StorageError {
        match self {
            WriteCondition::IfNoneMatch => StorageError::AlreadyExists {
                name: name.to_string(),
            },
            WriteCondition::IfMatch(etag) => StorageError::Changed {
                name: name.to_string(),
                etag: etag.clone(),
            },
            WriteCondition::Overwrite => StorageError::Client {
                what: name.to_string(),
                message: "an unconditional write reported a failed condition".into(),
            },
        }
    }
}

/// How an external tool (azcopy) may read one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAccess {
    /// A URL carrying its own authorisation (a SAS) or needing none.
    Url(url::Url),
    /// The plain URL; the tool logs in itself with `AZCOPY_AUTO_LOGIN_TYPE` (WORKLOAD,
    /// MSI or AZCLI), because no SAS could be minted for the Entra ID credential.
    AutoLogin {
        url: url::Url,
        login_type: &'static str,
    },
}

/// Mints URLs that let an external tool (azcopy) read one blob for a while.
#[async_trait]
pub trait ReadUrlSigner: Send + Sync + 'static {
    async fn read_url(&self, name: &str, valid_for: Duration) -> Result<url::Url>;

    /// [`ReadUrlSigner::read_url`], or where minting is impossible but the tool can log
    /// in by itself, the plain URL and how to log in.
    async fn read_access(&self, name: &str, valid_for: Duration) -> Result<ReadAccess> {
        self.read_url(name, valid_for).await.map(ReadAccess::Url)
    }
}

/// Replaces the signature of any SAS in `text` (`sig=...`) so it can be logged.
pub fn redact_sas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The operations adlsfs needs from a container. Blob names are full names inside the
/// container; prefixes passed to [`BlobStore::list_dir`] are empty or end in `/`.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// One directory level under `prefix` (delimiter `/`), all pages. Names the service
    /// returns are passed through raw, odd ones included (`a//b`, `..`): mapping them to
    /// POSIX names is the filesystem's job.
    async fn list_dir(&self, prefix: &str) -> Result<DirListing>;

    /// Properties, metadata and Content-MD5 of one blob.
    async fn head(&self, name: &str) -> Result<BlobMeta>;

    /// Bytes `range` of the blob, only while its ETag is still `etag`; [`StorageError::Changed`]
    /// otherwise. `None` reads the whole blob (the only way to read an empty one).
    async fn read(&self, name: &str, range: Option<Range<u64>>, etag: &str) -> Result<Bytes>;

    /// Like [`BlobStore::read`] of a range, but the body arrives in pieces as the service
    /// sends it, so a large range never sits whole in memory. The default reads it whole.
    async fn read_stream(&self, name: &str, range: Range<u64>, etag: &str) -> Result<ByteStream> {
        let data = self.read(name, Some(range), etag).await?;
        Ok(futures::stream::once(async move { Ok(data) }).boxed())
    }

    /// Bytes `range` of the blob, only while its ETag is still `etag` (else
    /// [`StorageError::Changed`]), with the MD5 the service computed for that range
    /// (`x-ms-range-get-content-md5: true`), for plain-HTTP endpoints where nothing else
    /// protects bytes in transit. The body is read whole; one of the wrong length is the
    /// transient `ShortBody` error [`BlobStore::read`] gives. The MD5 is returned, not
    /// compared: the caller compares it with the data, so damage done between the store and
    /// the caller is caught too, and treats a missing one as a failed check.
    ///
    /// A range must hold 1 to [`MAX_CHECKED_RANGE`] bytes; any other is refused up front
    /// with [`StorageError::Client`], without a request. What the services do with a
    /// longer range: Azure answers 400 (documented, not checked here). Azurite 3.35.0,
    /// checked here with curl-style requests (`Range` and `x-ms-range` alike): a range
    /// serving more than 4 MiB (`bytes=0-4194304`, `bytes=0-8388607` of a 12 MiB blob)
    /// gets 206, the whole body and no `Content-MD5`, without an error; the limit is on
    /// the bytes served, so `bytes=12582812-17825792` of that blob (100 bytes served) gets
    /// the MD5 of those 100 bytes; a range covering the whole blob gets the blob's
    /// Content-MD5 whatever its size. Up to 4 MiB served, Put Blob and block-list blobs
    /// alike, the header is the MD5 of the bytes served.
    async fn read_range_md5(
        &self,
        name: &str,
        range: Range<u64>,
        etag: &str,
    ) -> Result<CheckedRange>;

    /// Creates or replaces a blob with `data` and user `metadata` (unconditionally).
    async fn put(&self, name: &str, data: Bytes, metadata: &Metadata) -> Result<BlobMeta> {
        self.put_if(&BlobWrite::overwrite(name, metadata), data)
            .await
    }

    /// Writes a whole blob in one request (Put Blob) if `write.condition` holds, with
    /// `write.metadata`, and returns the new version as the service reported it (its ETag
    /// and Last-Modified, the Content-MD5 of `data`), with the size and metadata sent.
    ///
    /// A conditional write retried after a lost answer may meet its own first attempt:
    /// stores then report success only when the blob holds exactly what was sent (same
    /// size and metadata, carrying a digest or a matching Content-MD5), else the
    /// condition's error.
    async fn put_if(&self, write: &BlobWrite, data: Bytes) -> Result<BlobMeta>;

    /// Stages one block of a future blob (Put Block). Staged blocks are invisible until a
    /// [`BlobStore::put_block_list`] commits them; within one blob, ids must be of equal
    /// length, which every [`BlockId`] is. Staging an id again replaces its block.
    async fn put_block(&self, name: &str, id: BlockId, data: Bytes) -> Result<StagedBlock>;

    /// Commits the blob as the concatenation of `blocks` (Put Block List, each id looked
    /// up among the staged blocks, then the committed ones), with `write.metadata`, if
    /// `write.condition` holds. An id that is neither fails with 400 `InvalidBlockList` and
    /// changes nothing. A commit discards the blob's other staged blocks. The returned
    /// version's size is the sum of the blocks' sizes; it has no Content-MD5: the service
    /// records none for a block list.
    async fn put_block_list(&self, write: &BlobWrite, blocks: &[StagedBlock]) -> Result<BlobMeta>;

    /// Uploads a local file unconditionally (see [`BlobStore::put_file_if`]).
    async fn put_file(&self, name: &str, path: &Path, metadata: &Metadata) -> Result<BlobMeta> {
        self.put_file_if(&BlobWrite::overwrite(name, metadata), path)
            .await
    }

    /// Uploads a local file if `write.condition` holds: one [`BlobStore::put_if`] up to
    /// [`UPLOAD_PART_SIZE`], else blocks of that size, a few in flight, committed with the
    /// condition, so memory stays bounded whatever the file's size.
    async fn put_file_if(&self, write: &BlobWrite, path: &Path) -> Result<BlobMeta> {
        blocks::put_file(self, write, path, UPLOAD_PART_SIZE).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sas_signatures_are_redacted() {
        let text = "GET https://a.blob.core.windows.net/c/b?sv=1&sig=abc%2Bdef%3D&se=2 failed; \"sig=xyz\"";
        assert_eq!(
            super::redact_sas(text),
            "GET https://a.blob.core.windows.net/c/b?sv=1&sig=REDACTED&se=2 failed; \"sig=REDACTED\""
        );
    }
}
