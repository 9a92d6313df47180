//! Daemonising a mount: fork before any thread or runtime exists (forking a running tokio
//! process is unsafe), let the child mount, and keep the parent until the child reports
//! that the mount is live, so `mount(8)` and scripts see the outcome in the exit status.

use crate::app::ReadyNotifier;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The child's end of the pipe to the waiting parent.
pub struct PipeNotifier {
    pipe: OwnedFd,
}

impl ReadyNotifier for PipeNotifier {
    /// Tells the parent the mount is live, then detaches from the terminal.
    fn ready(self: Box<Self>) {
        let fd = self.pipe.as_raw_fd();
        // SAFETY: a valid pipe descriptor and a live two-byte buffer.
        unsafe { libc::write(fd, b"ok".as_ptr().cast(), 2) };
        drop(self.pipe);
        detach_stdio();
    }
}

/// Points stdin, stdout and stderr at /dev/null: whoever started the mount (a terminal,
/// mount(8) waiting on a pipe) must not be held by the daemon. Logs go to --log-file or
/// syslog instead.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for target in [0, 1, 2] {
        // SAFETY: duplicating a valid descriptor onto a standard one.
        unsafe { libc::dup2(null.as_raw_fd(), target) };
    }
    // SAFETY: chdir to a NUL-terminated constant path; the daemon no longer pins the cwd.
    unsafe { libc::chdir(c"/".as_ptr()) };
}

/// Forks. The parent waits for the child's readiness and exits (0 when the mount is live,
/// else the child's status); the child, in a new session, gets the notifier.
pub fn daemonize() -> io::Result<PipeNotifier> {
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
            Ok(PipeNotifier { pipe: write_end })
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

/// Log lines to syslog (journald on systemd machines), for a daemon started without
/// `--log-file`.
pub struct SyslogWriter;

impl SyslogWriter {
    pub fn open() {
        // SAFETY: a static NUL-terminated ident; openlog keeps the pointer.
        unsafe { libc::openlog(c"adlsfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
}

impl io::Write for SyslogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(line) = std::ffi::CString::new(line.replace('\0', " ")) {
                // SAFETY: a constant format string and a NUL-terminated argument.
                unsafe { libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), line.as_ptr()) };
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
