//! Errors of filesystem operations, each with the errno the kernel gets.

use crate::cache::CacheError;
use crate::fetch::FetchError;
use crate::storage::StorageError;

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
    Cache(#[from] CacheError),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FetchError> for FsError {
    fn from(e: FetchError) -> Self {
        FsError::Cache(CacheError::Fetch(e))
    }
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
            FsError::Storage(e) => storage_errno(e),
            FsError::Cache(e) if e.is_no_space() => libc::ENOSPC,
            FsError::Cache(CacheError::Fetch(FetchError::Storage(e))) => storage_errno(e),
            FsError::Cache(_) => libc::EIO,
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

fn storage_errno(e: &StorageError) -> i32 {
    match e {
        StorageError::NotFound { .. } | StorageError::ContainerNotFound { .. } => libc::ENOENT,
        StorageError::Auth { .. } => libc::EACCES,
        // The kernel answers ESTALE from open by looking the path up again (LOOKUP_REVAL)
        // and retrying once: with the listing marked stale, that opens the new version.
        StorageError::Changed { .. } => libc::ESTALE,
        _ => libc::EIO,
    }
}
