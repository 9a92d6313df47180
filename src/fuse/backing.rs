//! How each open handle is served, and the passthrough bookkeeping, along the lines of
//! fuser's `examples/passthrough.rs`: the kernel requires every handle of one inode to use
//! the same backing file, so there is one `BackingId` per inode, kept alive by the open
//! handles that use it and dropped (closing the kernel's reference) when the last of them
//! is released.
//!
//! Since Linux 6.9 an inode's I/O mode is exclusive: while any daemon-served (cached-mode)
//! handle of an inode is open, a passthrough open of it fails with EIO, and an open
//! handle's mode never changes. A handle opened while its file is still downloading is
//! served by the daemon, so while any such handle is open, later opens of that inode are
//! served by the daemon too; passthrough is used for opens made when none is left.

use fuser::BackingId;
use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, Weak};

#[derive(Default)]
pub struct BackingCache {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Weak<BackingId>>,
    by_handle: HashMap<u64, Arc<BackingId>>,
    /// Open daemon-served handles per inode, and the inode of each.
    daemon_served: HashMap<u64, usize>,
    daemon_handles: HashMap<u64, u64>,
}

/// How one open handle is served.
#[derive(Debug)]
pub enum Served {
    Passthrough(Arc<BackingId>),
    Daemon,
}

impl BackingCache {
    /// Decides how handle `fh` of inode `ino` is served: by passthrough to `cached` (the
    /// verified cache file) when there is one and no daemon-served handle of the inode is
    /// open, sharing the backing id of the inode's other passthrough handles or making one
    /// with `open_backing`; else by the daemon.
    pub fn attach(
        &self,
        ino: u64,
        fh: u64,
        cached: Option<&File>,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<Served> {
        let mut table = self.table.lock().expect("backing table");
        let file = match cached {
            Some(file) if !table.daemon_served.contains_key(&ino) => file,
            _ => {
                *table.daemon_served.entry(ino).or_default() += 1;
                table.daemon_handles.insert(fh, ino);
                return Ok(Served::Daemon);
            }
        };
        let id = match table.by_inode.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => Arc::new(open_backing(file)?),
        };
        table.by_inode.insert(ino, Arc::downgrade(&id));
        table.by_handle.insert(fh, Arc::clone(&id));
        Ok(Served::Passthrough(id))
    }

    /// Handle `fh` is closed; its inode's backing id goes with its last handle.
    pub fn release(&self, fh: u64) {
        let mut table = self.table.lock().expect("backing table");
        if let Some(ino) = table.daemon_handles.remove(&fh) {
            if let Some(n) = table.daemon_served.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    table.daemon_served.remove(&ino);
                }
            }
        }
        table.by_handle.remove(&fh);
        table.by_inode.retain(|_, id| id.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unused(_: &File) -> std::io::Result<BackingId> {
        Err(std::io::Error::other("no kernel here"))
    }

    #[test]
    fn a_daemon_served_handle_keeps_later_opens_of_its_inode_off_passthrough() {
        let cache = BackingCache::default();
        let file = File::open("/dev/null").unwrap();
        // Opened while downloading: the daemon serves it.
        assert!(matches!(
            cache.attach(7, 1, None, unused),
            Ok(Served::Daemon)
        ));
        // Published meanwhile, but handle 1 is open: the daemon again, not passthrough
        // (the kernel would refuse it with EIO).
        assert!(matches!(
            cache.attach(7, 2, Some(&file), unused),
            Ok(Served::Daemon)
        ));
        cache.release(1);
        assert!(matches!(
            cache.attach(7, 3, Some(&file), unused),
            Ok(Served::Daemon)
        ));
        cache.release(2);
        cache.release(3);
        // None left: passthrough is tried (and fails here, without a kernel).
        assert!(cache.attach(7, 4, Some(&file), unused).is_err());
        // Other inodes were never affected.
        assert!(cache.attach(8, 5, Some(&file), unused).is_err());
    }
}
