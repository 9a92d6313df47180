//! Daemonising a mount: fork before any thread or runtime exists (forking a running tokio
//! process is unsafe), let the child mount, and keep the parent until the child reports
//! that the mount is live, so `mount(8)` and scripts see the outcome in the exit status.

use crate::app::ReadyNotifier;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The child's end of the pipe to the waiting parent.
pub struct PipeNotifier {
    pipe: OwnedFd,
    /// Keep stderr (logs go there) rather than detaching it.
    keep_stderr: bool,
}

impl ReadyNotifier for PipeNotifier {
    /// Tells the parent the mount is live, then detaches from the terminal.
    fn ready(self: Box<Self>) {
        let fd = self.pipe.as_raw_fd();
        // SAFETY: a valid pipe descriptor and a live two-byte buffer.
        unsafe { libc::write(fd, b"ok".as_ptr().cast(), 2) };
        drop(self.pipe);
        detach_stdio(self.keep_stderr);
    }
}

fn detach_stdio(keep_stderr: bool) {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let targets: &[i32] = if keep_stderr { &[0, 1] } else { &[0, 1, 2] };
    for &target in targets {
        // SAFETY: duplicating a valid descriptor onto a standard one.
        unsafe { libc::dup2(null.as_raw_fd(), target) };
    }
    // SAFETY: chdir to a NUL-terminated constant path; the daemon no longer pins the cwd.
    unsafe { libc::chdir(c"/".as_ptr()) };
}

/// Forks. The parent waits for the child's readiness and exits (0 when the mount is live,
/// else the child's status); the child, in a new session, gets the notifier.
/// `keep_stderr` when logs go to stderr of a process that keeps one (a log file does not).
pub fn daemonize(keep_stderr: bool) -> io::Result<PipeNotifier> {
    let mut fds = [0i32; 2];
    // SAFETY: a valid two-element array for the descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet (callers daemonise before starting any).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no preconditions; it detaches from the controlling terminal.
            unsafe { libc::setsid() };
            Ok(PipeNotifier {
                pipe: write_end,
                keep_stderr,
            })
        }
        child => {
            drop(write_end);
            let mut answer = Vec::new();
            let _ = std::fs::File::from(read_end).read_to_end(&mut answer);
            if answer == b"ok" {
                std::process::exit(0);
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1
            };
            std::process::exit(if code == 0 { 1 } else { code });
        }
    }
}
