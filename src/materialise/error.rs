//! Why a materialisation failed: the cache, the fetch or the verification said no, or
//! adlsfs was shutting down. Each cause classifies itself ([`Classify`]).

use super::verify::VerifyError;
use crate::cache::CacheError;
use crate::error::{Classify, ErrorKind};
use crate::fetch::FetchError;

#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("adlsfs is shutting down; the download was abandoned")]
    Cancelled,
}

impl Classify for MaterialiseError {
    fn kind(&self) -> ErrorKind {
        match self {
            MaterialiseError::Cache(e) => e.kind(),
            MaterialiseError::Fetch(e) => e.kind(),
            MaterialiseError::Verify(e) => e.kind(),
            MaterialiseError::Cancelled => ErrorKind::Cancelled,
        }
    }
}
