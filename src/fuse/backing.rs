//! Passthrough bookkeeping, along the lines of fuser's `examples/passthrough.rs`: the
//! kernel requires every handle of one inode to use the same backing file, so there is one
//! `BackingId` per inode, kept alive by the open handles that use it and dropped (closing
//! the kernel's reference) when the last of them is released.

use fuser::BackingId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

#[derive(Default)]
pub struct BackingCache {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Weak<BackingId>>,
    by_handle: HashMap<u64, Arc<BackingId>>,
}

impl BackingCache {
    /// The backing id for handle `fh` of inode `ino`: the one the inode's other open
    /// handles use, else a new one from `open_backing` (registering the cache file with
    /// the kernel).
    pub fn attach(
        &self,
        ino: u64,
        fh: u64,
        open_backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut table = self.table.lock().expect("backing table");
        let id = match table.by_inode.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => Arc::new(open_backing()?),
        };
        table.by_inode.insert(ino, Arc::downgrade(&id));
        table.by_handle.insert(fh, Arc::clone(&id));
        Ok(id)
    }

    /// Handle `fh` is closed; its inode's backing id goes with its last handle.
    pub fn release(&self, fh: u64) {
        let mut table = self.table.lock().expect("backing table");
        table.by_handle.remove(&fh);
        table.by_inode.retain(|_, id| id.strong_count() > 0);
    }
}
