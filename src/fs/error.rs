//! Errors of filesystem operations, each with the errno the kernel gets. The causes from
//! below classify themselves ([`Classify`]); this file only names the core's own.

use crate::error::{Classify, ErrorKind};
use crate::materialise::download::StreamError;
use crate::materialise::MaterialiseError;
use crate::storage::StorageError;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("the filesystem is read-only")]
    ReadOnly,
    #[error("no such attribute")]
    NoAttribute,
    #[error("stale file handle")]
    BadHandle,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Materialise(#[from] MaterialiseError),
    /// An open that waited for a download that failed.
    #[error(transparent)]
    Open(Arc<MaterialiseError>),
    /// A read or close of a file whose download failed after it was opened.
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoAttribute => libc::ENODATA,
            FsError::BadHandle => libc::EBADF,
            FsError::Storage(e) => e.kind().errno(),
            FsError::Materialise(e) => e.kind().errno(),
            FsError::Open(e) => e.kind().errno(),
            // The version an open handle reads changed or vanished under it: the handle
            // has no other version to turn to (ESTALE would only make sense at open).
            FsError::Stream(e) => match e.kind() {
                ErrorKind::Changed | ErrorKind::NotFound => libc::EIO,
                kind => kind.errno(),
            },
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheError;
    use crate::fetch::FetchError;
    use crate::materialise::verify::VerifyError;

    fn changed() -> StorageError {
        StorageError::Changed {
            name: "b".into(),
            etag: "\"1\"".into(),
        }
    }

    fn io(raw: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(raw)
    }

    #[test]
    fn each_cause_reaches_the_kernel_as_its_errno() {
        let fetch =
            |e: StorageError| FsError::from(MaterialiseError::Fetch(FetchError::Storage(e)));
        let table: Vec<(FsError, i32)> = vec![
            (FsError::NotFound, libc::ENOENT),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NoAttribute, libc::ENODATA),
            (
                FsError::Storage(StorageError::NotFound { name: "b".into() }),
                libc::ENOENT,
            ),
            (
                FsError::Storage(StorageError::ContainerNotFound {
                    account: "a".into(),
                    container: "c".into(),
                }),
                libc::ENOENT,
            ),
            (
                FsError::Storage(StorageError::Auth {
                    what: "b".into(),
                    status: 403,
                    code: "AuthorizationFailure".into(),
                }),
                libc::EACCES,
            ),
            // A blob changed mid-fetch: ESTALE, so the kernel looks it up again.
            (fetch(changed()), libc::ESTALE),
            (
                fetch(StorageError::NotFound { name: "b".into() }),
                libc::ENOENT,
            ),
            (
                fetch(StorageError::Unreachable {
                    endpoint: "http://x".into(),
                    attempts: 3,
                    elapsed: std::time::Duration::ZERO,
                    cause: "refused".into(),
                }),
                libc::EIO,
            ),
            // A full disk is ENOSPC wherever it was met: cache, fetch or verification.
            (
                MaterialiseError::Cache(CacheError::NoSpace {
                    blob: "b".into(),
                    needed: 1,
                    detail: "x".into(),
                })
                .into(),
                libc::ENOSPC,
            ),
            (
                MaterialiseError::Fetch(FetchError::io(
                    std::path::Path::new("/t"),
                    io(libc::ENOSPC),
                ))
                .into(),
                libc::ENOSPC,
            ),
            (
                MaterialiseError::Cache(CacheError::Io {
                    path: "/t".into(),
                    source: io(libc::EDQUOT),
                })
                .into(),
                libc::ENOSPC,
            ),
            (
                MaterialiseError::Verify(VerifyError::DigestMismatch {
                    blob: "b".into(),
                    algo: "xxh3_128",
                    expected: "x".into(),
                    actual: "y".into(),
                })
                .into(),
                libc::EIO,
            ),
            (
                MaterialiseError::Verify(VerifyError::MissingDigest { blob: "b".into() }).into(),
                libc::EIO,
            ),
            (MaterialiseError::Cancelled.into(), libc::EIO),
            // A cache file gone missing is our problem, not a missing blob.
            (
                MaterialiseError::Cache(CacheError::Io {
                    path: "/t".into(),
                    source: io(libc::ENOENT),
                })
                .into(),
                libc::EIO,
            ),
            (FsError::Io(io(libc::EBADF)), libc::EBADF),
        ];
        for (error, errno) in table {
            assert_eq!(error.errno(), errno, "{error:?}");
        }
    }
}
