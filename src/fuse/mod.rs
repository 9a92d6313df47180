//! The FUSE adapter: converts kernel requests into calls on the [`AdlsFs`] core and maps
//! errors to errnos, nothing more. Requests that may wait on the network (lookup, readdir,
//! open, getxattr) run as tasks on the tokio runtime, so no FUSE thread ever waits on
//! storage or on another file's download; local-only requests are answered inline.

pub mod backing;
pub mod dir;
pub mod session;

use crate::fs::{AdlsFs, Attr, DirEntry, FsError, Kind};
use backing::{BackingCache, Served};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Deepest filesystem stack a passthrough backing file may sit on (an overlayfs cache
/// directory counts one level).
const MAX_STACK_DEPTH: u32 = 2;

pub struct FuseAdapter {
    fs: Arc<AdlsFs>,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    passthrough: Arc<AtomicBool>,
    backing: Arc<BackingCache>,
    /// Set once the session exists: drops an inode's cached pages when its download
    /// fails, so pages read before the failure are not served from the page cache again.
    notifier: Arc<OnceLock<Notifier>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<AdlsFs>, rt: tokio::runtime::Handle, ttl: Duration) -> Self {
        Self {
            fs,
            rt,
            ttl,
            passthrough: Arc::new(AtomicBool::new(false)),
            backing: Arc::new(BackingCache::default()),
            notifier: Arc::new(OnceLock::new()),
        }
    }

    /// Where the session's notifier goes once the session is made.
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        Arc::clone(&self.notifier)
    }

    /// Whether the kernel agreed to passthrough reads (known after init).
    pub fn passthrough_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.passthrough)
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// After a handle learnt that its file's download failed: drops the inode's cached pages
/// (off the request path, since the kernel may wait on pages other reads hold), so every
/// later read of that version reaches the daemon and gets the error too.
fn forget_pages(notifier: &Arc<OnceLock<Notifier>>, ino: INodeNo, e: &FsError) {
    if !matches!(e, FsError::Stream(_)) {
        return;
    }
    let notifier = Arc::clone(notifier);
    std::thread::spawn(move || {
        if let Some(n) = notifier.get() {
            if let Err(e) = n.inval_inode(ino, 0, 0) {
                tracing::debug!(error = %e, ino = ino.0, "could not drop the failed file's cached pages");
            }
        }
    });
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

/// The xattr size protocol: size 0 asks for the length, too small a buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

fn erofs() -> Errno {
    Errno::from_i32(libc::EROFS)
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS;
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::debug!(?missing, "kernel lacks some optional FUSE capabilities");
        }
        let passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(MAX_STACK_DEPTH).is_ok();
        self.passthrough.store(passthrough, Ordering::SeqCst);
        tracing::info!(passthrough, "FUSE session initialised");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        let (fs, ttl) = (Arc::clone(&self.fs), self.ttl);
        self.rt.spawn(async move {
            match fs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fs = Arc::clone(&self.fs);
        self.rt.spawn(async move {
            let entries = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(entries) => entries,
                Err(e) => return reply.error(errno(&e)),
            };
            let dots = [(ino.0, None), (fs.parent(ino.0), None)];
            for row in dir::rows(dots, &entries, offset) {
                let kind = file_type(row.kind);
                if reply.add(INodeNo(row.ino), row.next_offset, kind, row.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (fs, ttl) = (Arc::clone(&self.fs), self.ttl);
        self.rt.spawn(async move {
            let entries: Arc<Vec<DirEntry>> = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(entries) => entries,
                Err(e) => return reply.error(errno(&e)),
            };
            let parent = fs.parent(ino.0);
            let dots = [
                (ino.0, fs.getattr(ino.0).ok()),
                (parent, fs.getattr(parent).ok()),
            ];
            for row in dir::rows(dots, &entries, offset) {
                // A dot entry whose inode is gone cannot be described: leave it out.
                let Some(attr) = row.attr else { continue };
                let full = reply.add(
                    INodeNo(row.ino),
                    row.next_offset,
                    row.name,
                    &ttl,
                    &file_attr(&attr),
                    Generation(0),
                );
                if full {
                    break;
                }
                if !row.is_dot {
                    // Each entry handed out counts as a lookup the kernel will forget.
                    fs.remember(row.ino);
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let fs = Arc::clone(&self.fs);
        let passthrough = Arc::clone(&self.passthrough);
        let backing = Arc::clone(&self.backing);
        self.rt.spawn(async move {
            let open = match fs.open(ino.0, write).await {
                Ok(open) => open,
                Err(e) => return reply.error(errno(&e)),
            };
            if passthrough.load(Ordering::SeqCst) {
                let open_backing = |file: &std::fs::File| reply.open_backing(file);
                match backing.attach(ino.0, open.fh, open.cached_file(), open_backing) {
                    Ok(Served::Passthrough(id)) => {
                        return reply.opened_passthrough(FileHandle(open.fh), FopenFlags::empty(), &id);
                    }
                    Ok(Served::Daemon) => {}
                    Err(e) => {
                        // Not permitted or not supported after all: read through the daemon.
                        tracing::warn!(error = %e, "FUSE passthrough unavailable; serving reads with pread");
                        passthrough.store(false, Ordering::SeqCst);
                    }
                }
            }
            // One inode is one immutable blob version (and bytes served during its
            // download are that version's), so the kernel may keep its pages.
            reply.opened(FileHandle(open.fh), FopenFlags::FOPEN_KEEP_CACHE);
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Cached files and landed bytes are answered here; bytes still to come are
        // awaited in a task, never on a FUSE thread.
        match self.fs.read_now(fh.0, offset, size) {
            Some(Ok(data)) => return reply.data(&data),
            Some(Err(e)) => {
                reply.error(errno(&e));
                return forget_pages(&self.notifier, ino, &e);
            }
            None => {}
        }
        let (fs, notifier) = (Arc::clone(&self.fs), Arc::clone(&self.notifier));
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    reply.error(errno(&e));
                    forget_pages(&notifier, ino, &e);
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => {
                reply.error(errno(&e));
                forget_pages(&self.notifier, ino, &e);
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.backing.release(fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.fs.inode_count() as u64, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // `ls -l` asks every file for security.selinux and system.posix_acl_access, and
        // FUSE forwards each ask: names adlsfs never has are refused here, with no lock,
        // allocation or task.
        let Some(name) = name.to_str().filter(|n| crate::fs::is_known_xattr(n)) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        let name = name.to_string();
        match self.fs.getxattr_now(ino.0, &name) {
            Some(Ok(value)) => return reply_xattr(reply, size, &value),
            Some(Err(e)) => return reply.error(errno(&e)),
            None => {}
        }
        let fs = Arc::clone(&self.fs);
        self.rt.spawn(async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(value) => reply_xattr(reply, size, &value),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(reply, size, &list);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.bits() & libc::W_OK != 0 {
            return reply.error(erofs());
        }
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Nothing that would change the tree is implemented: the kernel mount is read-only
    // (`MountOption::RO`, src/fuse/session.rs), so the VFS answers EROFS to every mkdir,
    // create, write, truncate, rename, unlink, link, setxattr and fallocate before FUSE is
    // asked (tests/mount.rs checks each through a real mount). The write path will
    // implement them behind --allow-write.
}
