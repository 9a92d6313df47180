//! Mounting and unmounting: checks the mountpoint, starts the FUSE session on its own
//! threads, and unmounts on request (signal) or notices an external `fusermount3 -u`.

use super::FuseAdapter;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// How the kernel session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mountpoint: PathBuf,
    /// Shown as the source in the mount table (`adls://account/container/prefix`).
    pub fsname: String,
    pub allow_other: bool,
    /// Threads reading requests from the kernel.
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {0} does not exist: create the directory first")]
    Missing(PathBuf),
    #[error("mountpoint {0} is not a directory")]
    NotDir(PathBuf),
    #[error("mountpoint {0} is not empty: mount on an empty directory so no files are hidden")]
    NotEmpty(PathBuf),
    #[error("mounting at {path}: {source} (is /dev/fuse present and fusermount3 installed?)")]
    Fuse {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A live mount: the session thread and the means to end it.
pub struct Mounted {
    thread: JoinHandle<std::io::Result<()>>,
    unmounter: SessionUnmounter,
    mountpoint: PathBuf,
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True once the kernel ended the session (e.g. `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Unmounts (if still mounted) and waits, for a bounded time, for the session threads
    /// to end. A mount kept busy by open files is detached lazily: new accesses fail, open
    /// files are cut off when the process exits.
    pub fn unmount(mut self) -> std::io::Result<()> {
        if !self.thread.is_finished() {
            if let Err(e) = self.unmounter.unmount() {
                // EINVAL: not a mount point any more, unmounted from outside a moment ago
                // (the session thread has not noticed yet). Nothing to detach.
                let gone = e.raw_os_error() == Some(libc::EINVAL);
                if !gone && !self.thread.is_finished() {
                    tracing::warn!(error = %e, "mount busy; detaching it lazily");
                    let _ = std::process::Command::new("fusermount3")
                        .arg("-u")
                        .arg("-z")
                        .arg(&self.mountpoint)
                        .status();
                }
            }
        }
        let deadline = std::time::Instant::now() + UNMOUNT_WAIT;
        while !self.thread.is_finished() {
            if std::time::Instant::now() > deadline {
                tracing::warn!("FUSE session still referenced by open files; exiting anyway");
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("FUSE session thread panicked"))?
    }
}

/// How long an unmount waits for the kernel to release the session.
const UNMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let meta = std::fs::metadata(path).map_err(|_| MountError::Missing(path.to_path_buf()))?;
    if !meta.is_dir() {
        return Err(MountError::NotDir(path.to_path_buf()));
    }
    let mut entries = std::fs::read_dir(path).map_err(|source| MountError::Fuse {
        path: path.to_path_buf(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(MountError::NotEmpty(path.to_path_buf()));
    }
    Ok(())
}

pub fn mount(adapter: FuseAdapter, config: &SessionConfig) -> Result<Mounted, MountError> {
    check_mountpoint(&config.mountpoint)?;
    let mut fuse_config = Config::default();
    fuse_config.mount_options = vec![
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("adlsfs".into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    fuse_config.acl = if config.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let fuse_err = |source| MountError::Fuse {
        path: config.mountpoint.clone(),
        source,
    };
    let notifier = adapter.notifier_slot();
    let mut session = Session::new(adapter, &config.mountpoint, &fuse_config).map_err(fuse_err)?;
    let _ = notifier.set(session.notifier());
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || session.run())
        .map_err(fuse_err)?;
    Ok(Mounted {
        thread,
        unmounter,
        mountpoint: config.mountpoint.clone(),
    })
}
