//! Verification of a downloaded file against what the blob's metadata promises: xxh3_128
//! from `hash_xxh3_128_b64` where present, else Content-MD5, else only the length (or a
//! refusal with `--require-digest`). One pass over the file computes what is needed.

use super::FetchError;
use crate::digest::{Md5Digest, Xxh3Digest, Xxh3Hasher};
use crate::storage::BlobMeta;
use std::io::Read;
use std::path::Path;

const READ_BUF: usize = 1 << 20;

/// What a verified file is known to hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub xxh3: Xxh3Digest,
    /// How the file was checked: "xxh3_128", "md5" or "length".
    pub checked_by: &'static str,
}

/// True when verifying `meta` needs an MD5 (no xxh3 metadata, but Content-MD5).
pub fn needs_md5(meta: &BlobMeta) -> bool {
    !matches!(meta.xxh3(), Ok(Some(_))) && meta.content_md5.is_some()
}

/// Hashes `path` and compares with `meta`. Blocking: call from a blocking thread.
pub fn verify_file(
    path: &Path,
    meta: &BlobMeta,
    require_digest: bool,
) -> Result<Verified, FetchError> {
    // Refuse before hashing what could never be accepted.
    let expected_xxh3 = check_digest_policy(meta, require_digest)?;
    let (xxh3, md5, size) =
        hash_file(path, needs_md5(meta)).map_err(|e| FetchError::io(path, e))?;
    compare(meta, expected_xxh3, xxh3, md5, size)
}

/// The xxh3 the metadata promises, if any; an error when the metadata is unusable or
/// `require_digest` refuses a blob with no digest at all.
fn check_digest_policy(
    meta: &BlobMeta,
    require_digest: bool,
) -> Result<Option<Xxh3Digest>, FetchError> {
    let expected_xxh3 = meta
        .xxh3()
        .map_err(|source| FetchError::BadDigestMetadata {
            blob: meta.name.clone(),
            source,
        })?;
    if expected_xxh3.is_none() && meta.content_md5.is_none() && require_digest {
        return Err(FetchError::MissingDigest {
            blob: meta.name.clone(),
        });
    }
    Ok(expected_xxh3)
}

/// Compares digests computed from `size` downloaded bytes with what `meta` promises.
pub fn verify_digests(
    meta: &BlobMeta,
    require_digest: bool,
    xxh3: Xxh3Digest,
    md5: Option<Md5Digest>,
    size: u64,
) -> Result<Verified, FetchError> {
    let expected_xxh3 = check_digest_policy(meta, require_digest)?;
    compare(meta, expected_xxh3, xxh3, md5, size)
}

fn compare(
    meta: &BlobMeta,
    expected_xxh3: Option<Xxh3Digest>,
    xxh3: Xxh3Digest,
    md5: Option<Md5Digest>,
    size: u64,
) -> Result<Verified, FetchError> {
    if size != meta.size {
        return Err(FetchError::SizeMismatch {
            blob: meta.name.clone(),
            expected: meta.size,
            actual: size,
        });
    }
    let mismatch = |algo, expected: String, actual: String| FetchError::DigestMismatch {
        blob: meta.name.clone(),
        algo,
        expected,
        actual,
    };
    if let Some(expected) = expected_xxh3 {
        if expected != xxh3 {
            return Err(mismatch("xxh3_128", expected.to_base64(), xxh3.to_base64()));
        }
        return Ok(Verified {
            xxh3,
            checked_by: "xxh3_128",
        });
    }
    if let Some(expected) = meta.content_md5 {
        let actual = md5.expect("MD5 computed whenever Content-MD5 is the check");
        if expected != actual {
            return Err(mismatch("md5", expected.to_base64(), actual.to_base64()));
        }
        return Ok(Verified {
            xxh3,
            checked_by: "md5",
        });
    }
    Ok(Verified {
        xxh3,
        checked_by: "length",
    })
}

fn hash_file(path: &Path, with_md5: bool) -> std::io::Result<(Xxh3Digest, Option<Md5Digest>, u64)> {
    use md5::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut xxh3 = Xxh3Hasher::new();
    let mut md5 = with_md5.then(md5::Md5::new);
    let mut buf = vec![0u8; READ_BUF];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        xxh3.update(&buf[..n]);
        if let Some(m) = md5.as_mut() {
            m.update(&buf[..n]);
        }
        size += n as u64;
    }
    Ok((
        xxh3.finish(),
        md5.map(|m| Md5Digest(m.finalize().into())),
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{md5, xxh3_128, XXH3_METADATA_KEY};
    use std::time::SystemTime;

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
            true,
        )
        .unwrap();
        assert_eq!(
            ok,
            Verified {
                xxh3: xxh3_128(data),
                checked_by: "xxh3_128"
            }
        );
        let wrong = meta(data, Some(xxh3_128(b"other").to_base64()), Some(md5(data)));
        let err = verify_file(f.path(), &wrong, false).unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::DigestMismatch {
                    algo: "xxh3_128",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn md5_when_no_xxh3_then_length_or_refusal() {
        let data = b"hello world\n";
        let f = file_with(data);
        assert_eq!(
            verify_file(f.path(), &meta(data, None, Some(md5(data))), true)
                .unwrap()
                .checked_by,
            "md5"
        );
        let bad_md5 = meta(data, None, Some(md5(b"x")));
        assert!(matches!(
            verify_file(f.path(), &bad_md5, false),
            Err(FetchError::DigestMismatch { algo: "md5", .. })
        ));
        assert_eq!(
            verify_file(f.path(), &meta(data, None, None), false)
                .unwrap()
                .checked_by,
            "length"
        );
        assert!(matches!(
            verify_file(f.path(), &meta(data, None, None), true),
            Err(FetchError::MissingDigest { .. })
        ));
    }

    #[test]
    fn short_files_and_garbage_metadata_are_refused() {
        let f = file_with(b"hello");
        let mut m = meta(b"hello world\n", None, None);
        assert!(matches!(
            verify_file(f.path(), &m, false),
            Err(FetchError::SizeMismatch {
                expected: 12,
                actual: 5,
                ..
            })
        ));
        m.size = 5;
        m.metadata
            .insert(XXH3_METADATA_KEY.into(), "not-a-digest".into());
        assert!(matches!(
            verify_file(f.path(), &m, false),
            Err(FetchError::BadDigestMetadata { .. })
        ));
    }
}
