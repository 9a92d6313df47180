//! A download that readers use while it runs.
//!
//! An open of an uncached file returns as soon as the service has confirmed the pinned
//! version; its reads are then served from the byte ranges that have landed in the
//! download's temporary file, each waiting only for the bytes it covers (and asking the
//! fetcher for them at once when they are far from the download front). The whole file is
//! still verified before it is published; if that check fails, every handle of the
//! version gets the failure from then on.
//!
//! ```text
//! Starting ──confirmed──▶ Streaming(attempt) ──verified, published──▶ Published(entry)
//!     └───────────────────────────┴──────────any failure─────────────▶ Failed(error)
//! ```

use super::MaterialiseError;
use crate::cache::{read_at, HeldEntry};
use crate::error::{Classify, ErrorKind};
use crate::fetch::landed::Landed;
use crate::fetch::EarlyReads;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// One try at fetching the file: where its bytes land and a reader of that file.
#[derive(Debug)]
pub struct Attempt {
    pub landed: Arc<Landed>,
    /// The temporary, opened for reading; after publication the same inode is the cache
    /// entry, so bytes read through it never change.
    pub reader: File,
}

#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for locks or space, or for the service to confirm the version.
    Starting,
    /// Bytes are landing; readers read what has.
    Streaming(Arc<Attempt>),
    /// Verified and in the cache, held for the handles opened during the download.
    Published(Arc<HeldEntry>),
    Failed(Arc<MaterialiseError>),
}

/// Why a read of a download failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The download (or its final check) failed: every handle of the version gets this.
    #[error(transparent)]
    Failed(Arc<MaterialiseError>),
    #[error("reading the downloaded bytes: {0}")]
    Io(#[from] std::io::Error),
}

impl Classify for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Failed(e) => e.kind(),
            StreamError::Io(e) => crate::error::io_kind(e),
        }
    }
}

/// What an open made during a download gets.
#[derive(Debug)]
pub enum Opened {
    /// The verified cache file.
    Published(HeldEntry),
    /// The download, readable as it lands.
    Streaming(Arc<Download>),
}

#[derive(Debug)]
pub struct Download {
    size: u64,
    phase: watch::Sender<Phase>,
}

impl Download {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            phase: watch::Sender::new(Phase::Starting),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Whether readers may have been served bytes of an attempt.
    pub fn has_streamed(&self) -> bool {
        !matches!(&*self.phase.borrow(), Phase::Starting)
    }

    /// The failure every handle gets, once the download failed.
    pub fn failure(&self) -> Option<Arc<MaterialiseError>> {
        match &*self.phase.borrow() {
            Phase::Failed(e) => Some(Arc::clone(e)),
            _ => None,
        }
    }

    fn stream(&self, attempt: Arc<Attempt>) {
        // A late word from a fetch must not undo its end.
        self.phase.send_if_modified(|p| match p {
            Phase::Starting | Phase::Streaming(_) => {
                *p = Phase::Streaming(attempt);
                true
            }
            _ => false,
        });
    }

    pub(super) fn finish(&self, result: Result<Arc<HeldEntry>, Arc<MaterialiseError>>) {
        self.phase.send_replace(match result {
            Ok(held) => Phase::Published(held),
            Err(e) => Phase::Failed(e),
        });
    }

    /// Waits until reads can be served (or the download failed first).
    pub async fn wait_readable(&self) -> Result<(), Arc<MaterialiseError>> {
        let mut rx = self.phase.subscribe();
        let phase = rx
            .wait_for(|p| !matches!(p, Phase::Starting))
            .await
            .expect("the sender lives in self")
            .clone();
        match phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn clamp(&self, offset: u64, size: u32) -> Range<u64> {
        let start = offset.min(self.size);
        start..offset.saturating_add(size as u64).min(self.size)
    }

    /// The read when it can be answered now (landed or published), `None` when it must
    /// wait.
    pub fn read_now(&self, offset: u64, size: u32) -> Option<Result<Vec<u8>, StreamError>> {
        let range = self.clamp(offset, size);
        match self.phase() {
            Phase::Failed(e) => Some(Err(StreamError::Failed(e))),
            Phase::Published(held) => Some(read_range(&held.file, range)),
            Phase::Streaming(a) if a.landed.has(&range) => Some(read_range(&a.reader, range)),
            _ => None,
        }
    }

    /// Reads bytes `offset..offset + size` (clipped to the file), waiting for them to land.
    pub async fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, StreamError> {
        let range = self.clamp(offset, size);
        let mut rx = self.phase.subscribe();
        loop {
            let phase = rx.borrow_and_update().clone();
            let attempt = match phase {
                Phase::Failed(e) => return Err(StreamError::Failed(e)),
                Phase::Published(held) => return read_range(&held.file, range),
                Phase::Starting => {
                    let _ = rx.changed().await;
                    continue;
                }
                Phase::Streaming(attempt) => attempt,
            };
            if !attempt.landed.has(&range) {
                attempt.landed.demand(range.clone());
                tokio::select! {
                    landed = attempt.landed.wait_for(range.clone()) => {
                        if landed.is_err() {
                            // This attempt ended short: the next phase tells what follows.
                            let _ = rx.changed().await;
                            continue;
                        }
                    }
                    _ = rx.changed() => continue,
                }
            }
            // A failure between the wait and here wins: check once more.
            if let Phase::Failed(e) = &*self.phase.borrow() {
                return Err(StreamError::Failed(Arc::clone(e)));
            }
            return read_range(&attempt.reader, range);
        }
    }
}

fn read_range(file: &File, range: Range<u64>) -> Result<Vec<u8>, StreamError> {
    Ok(read_at(
        file,
        range.start,
        (range.end - range.start) as usize,
    )?)
}

/// A fetcher's word that readers may come in: they read `landed` from `path`.
impl EarlyReads for Download {
    fn readable(&self, landed: &Arc<Landed>, path: &Path) {
        match File::open(path) {
            Ok(reader) => self.stream(Arc::new(Attempt {
                landed: Arc::clone(landed),
                reader,
            })),
            // Readers then wait for the verified file.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the download for early reads")
            }
        }
    }
}
