//! Verification of a downloaded file against what the blob's metadata promises: xxh3_128
//! from `hash_xxh3_128_b64` where present, else Content-MD5, else only the length (or a
//! refusal with `--require-digest`). Digests come from the fetcher when it hashed while
//! downloading, else from one pass over the file that computes only what is needed.

use crate::digest::{DigestError, Digests, Hasher, Xxh3Digest};
use crate::error::{io_kind, Classify, ErrorKind};
use crate::storage::BlobMeta;
use std::path::Path;

/// What a blob with no digest of any kind gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Refuse blobs with neither xxh3 metadata nor Content-MD5 (`--require-digest`).
    pub require_digest: bool,
    /// Serve no byte before the whole file is verified (`--verify-before-read`); by
    /// default reads are served during the fetch from transit-protected landed ranges.
    pub before_read: bool,
}

/// What checked a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedBy {
    Xxh3,
    Md5,
    /// No digest to compare with: a complete, length-checked download.
    Length,
}

impl CheckedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckedBy::Xxh3 => "xxh3_128",
            CheckedBy::Md5 => "md5",
            CheckedBy::Length => "length",
        }
    }
}

impl std::fmt::Display for CheckedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a verified file is known to hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub xxh3: Xxh3Digest,
    pub checked_by: CheckedBy,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{algo} mismatch for {blob:?}: metadata says {expected}, the downloaded bytes hash to {actual}; the blob is corrupt or its metadata is wrong")]
    DigestMismatch {
        blob: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{blob:?}: received {actual} bytes, expected {expected}")]
    SizeMismatch {
        blob: String,
        expected: u64,
        actual: u64,
    },
    #[error("{blob:?} has neither an xxh3_128 digest in its metadata nor Content-MD5, and --require-digest refuses unverifiable blobs")]
    MissingDigest { blob: String },
    #[error("{blob:?} has an unusable digest in its metadata: {source}")]
    BadDigestMetadata { blob: String, source: DigestError },
    #[error("reading {path} to verify it: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Classify for VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::DigestMismatch { .. } | VerifyError::SizeMismatch { .. } => {
                ErrorKind::Corrupt
            }
            VerifyError::MissingDigest { .. } | VerifyError::BadDigestMetadata { .. } => {
                ErrorKind::Unverifiable
            }
            VerifyError::Io { source, .. } => io_kind(source),
        }
    }
}

/// True when verifying `meta` needs an MD5 (no xxh3 metadata, but Content-MD5).
pub fn needs_md5(meta: &BlobMeta) -> bool {
    !matches!(meta.xxh3(), Ok(Some(_))) && meta.content_md5.is_some()
}

/// Hashes `path` and compares with `meta`. Blocking: call from a blocking thread.
pub fn verify_file(
    path: &Path,
    meta: &BlobMeta,
    policy: VerifyPolicy,
) -> Result<Verified, VerifyError> {
    // Refuse before hashing what could never be accepted.
    let expected_xxh3 = expected_xxh3(meta, policy)?;
    let digests = Hasher::file(path, needs_md5(meta)).map_err(|source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    compare(meta, expected_xxh3, &digests, digests.len)
}

/// Compares digests computed while downloading with what `meta` promises; `file_len` is
/// the length of the file they were computed over.
pub fn verify_digests(
    meta: &BlobMeta,
    policy: VerifyPolicy,
    digests: &Digests,
    file_len: u64,
) -> Result<Verified, VerifyError> {
    let expected_xxh3 = expected_xxh3(meta, policy)?;
    compare(meta, expected_xxh3, digests, file_len)
}

/// Refuses, from its metadata alone, a blob no download could make acceptable under
/// `policy`: unusable digest metadata, or no digest at all with `--require-digest`.
pub fn check_verifiable(meta: &BlobMeta, policy: VerifyPolicy) -> Result<(), VerifyError> {
    expected_xxh3(meta, policy).map(|_| ())
}

/// The xxh3 the metadata promises, if any; an error when the metadata is unusable or the
/// policy refuses a blob with no digest at all.
fn expected_xxh3(meta: &BlobMeta, policy: VerifyPolicy) -> Result<Option<Xxh3Digest>, VerifyError> {
    let expected = meta
        .xxh3()
        .map_err(|source| VerifyError::BadDigestMetadata {
            blob: meta.name.clone(),
            source,
        })?;
    if expected.is_none() && meta.content_md5.is_none() && policy.require_digest {
        return Err(VerifyError::MissingDigest {
            blob: meta.name.clone(),
        });
    }
    Ok(expected)
}

fn compare(
    meta: &BlobMeta,
    expected_xxh3: Option<Xxh3Digest>,
    digests: &Digests,
    file_len: u64,
) -> Result<Verified, VerifyError> {
    for actual in [file_len, digests.len] {
        if actual != meta.size {
            return Err(VerifyError::SizeMismatch {
                blob: meta.name.clone(),
                expected: meta.size,
                actual,
            });
        }
    }
    let mismatch = |algo, expected: String, actual: String| VerifyError::DigestMismatch {
        blob: meta.name.clone(),
        algo,
        expected,
        actual,
    };
    let xxh3 = digests.xxh3;
    if let Some(expected) = expected_xxh3 {
        if expected != xxh3 {
            return Err(mismatch("xxh3_128", expected.to_base64(), xxh3.to_base64()));
        }
        return Ok(Verified {
            xxh3,
            checked_by: CheckedBy::Xxh3,
        });
    }
    if let Some(expected) = meta.content_md5 {
        let actual = digests
            .md5
            .expect("MD5 computed whenever Content-MD5 is the check");
        if expected != actual {
            return Err(mismatch("md5", expected.to_base64(), actual.to_base64()));
        }
        return Ok(Verified {
            xxh3,
            checked_by: CheckedBy::Md5,
        });
    }
    Ok(Verified {
        xxh3,
        checked_by: CheckedBy::Length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{md5, xxh3_128, Md5Digest, XXH3_METADATA_KEY};
    use std::time::SystemTime;

    const STRICT: VerifyPolicy = VerifyPolicy {
        require_digest: true,
        before_read: false,
    };
    const LENIENT: VerifyPolicy = VerifyPolicy {
        require_digest: false,
        before_read: false,
    };

    fn meta(data: &[u8], xxh3: Option<String>, with_md5: Option<Md5Digest>) -> BlobMeta {
        BlobMeta {
            name: "b".into(),
            size: data.len() as u64,
            last_modified: SystemTime::UNIX_EPOCH,
            etag: "\"e\"".into(),
            content_md5: with_md5,
            metadata: xxh3
                .map(|v| [(XXH3_METADATA_KEY.to_string(), v)].into())
                .unwrap_or_default(),
        }
    }

    fn file_with(data: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), data).unwrap();
        f
    }

    #[test]
    fn xxh3_metadata_is_checked_first() {
        let data = b"hello world\n";
        let f = file_with(data);
        let ok = verify_file(
            f.path(),
            &meta(data, Some(xxh3_128(data).to_base64()), None),
            STRICT,
        )
        .unwrap();
        assert_eq!(
            ok,
            Verified {
                xxh3: xxh3_128(data),
                checked_by: CheckedBy::Xxh3
            }
        );
        let wrong = meta(data, Some(xxh3_128(b"other").to_base64()), Some(md5(data)));
        let err = verify_file(f.path(), &wrong, LENIENT).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::DigestMismatch {
                    algo: "xxh3_128",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn md5_when_no_xxh3_then_length_or_refusal() {
        let data = b"hello world\n";
        let f = file_with(data);
        assert_eq!(
            verify_file(f.path(), &meta(data, None, Some(md5(data))), STRICT)
                .unwrap()
                .checked_by,
            CheckedBy::Md5
        );
        let bad_md5 = meta(data, None, Some(md5(b"x")));
        assert!(matches!(
            verify_file(f.path(), &bad_md5, LENIENT),
            Err(VerifyError::DigestMismatch { algo: "md5", .. })
        ));
        assert_eq!(
            verify_file(f.path(), &meta(data, None, None), LENIENT)
                .unwrap()
                .checked_by,
            CheckedBy::Length
        );
        let refused = verify_file(f.path(), &meta(data, None, None), STRICT).unwrap_err();
        assert!(matches!(refused, VerifyError::MissingDigest { .. }));
        assert_eq!(refused.kind(), ErrorKind::Unverifiable);
    }

    #[test]
    fn short_files_and_garbage_metadata_are_refused() {
        let f = file_with(b"hello");
        let mut m = meta(b"hello world\n", None, None);
        assert!(matches!(
            verify_file(f.path(), &m, LENIENT),
            Err(VerifyError::SizeMismatch {
                expected: 12,
                actual: 5,
                ..
            })
        ));
        m.size = 5;
        m.metadata
            .insert(XXH3_METADATA_KEY.into(), "not-a-digest".into());
        assert!(matches!(
            verify_file(f.path(), &m, LENIENT),
            Err(VerifyError::BadDigestMetadata { .. })
        ));
    }

    #[test]
    fn streamed_digests_are_checked_against_both_lengths() {
        let data = b"hello world\n";
        let m = meta(data, Some(xxh3_128(data).to_base64()), None);
        let mut hasher = Hasher::new(false);
        hasher.update(data);
        let digests = hasher.finish();
        assert!(verify_digests(&m, STRICT, &digests, 12).is_ok());
        assert!(matches!(
            verify_digests(&m, STRICT, &digests, 13),
            Err(VerifyError::SizeMismatch { actual: 13, .. })
        ));
    }
}
