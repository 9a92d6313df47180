//! What kind of failure an error is, decided where the error arises.
//!
//! Each layer's error (storage, fetch, verification, cache, materialisation) answers
//! [`Classify::kind`] itself, by looking only at its own variants and delegating to the
//! error it wraps; callers never match three levels deep. The kind decides the errno a
//! reader gets, whether a retry can help, and the label a failure is counted under in the
//! metrics.

/// The kinds of failure adlsfs tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The blob, container or local path does not exist.
    NotFound,
    /// The blob changed since it was listed (its ETag moved on).
    Changed,
    /// The blob already exists where only a new one was allowed.
    AlreadyExists,
    /// The local disk (cache, staging) is full or over quota, or the file can't fit.
    NoSpace,
    /// The service refused the credentials or their permissions.
    Auth,
    /// Bytes did not match what the metadata promises (digest or size).
    Corrupt,
    /// The blob cannot be verified under the configured policy (no digest, bad metadata).
    Unverifiable,
    /// A fault worth retrying: throttling, server errors, broken or stalled connections.
    Transient,
    /// adlsfs is shutting down and abandoned the work.
    Cancelled,
    /// The configuration or the credentials are unusable as given.
    Config,
    /// Anything else: a local I/O error, a tool that failed, a client bug.
    Other,
}

impl ErrorKind {
    /// The errno a reader of the mount gets for this kind of failure.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            // The kernel answers ESTALE from open by looking the path up again
            // (LOOKUP_REVAL) and retrying once: with the listing marked stale, that opens
            // the new version.
            ErrorKind::Changed => libc::ESTALE,
            ErrorKind::AlreadyExists => libc::EEXIST,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::Auth => libc::EACCES,
            ErrorKind::Corrupt
            | ErrorKind::Unverifiable
            | ErrorKind::Transient
            | ErrorKind::Cancelled
            | ErrorKind::Config
            | ErrorKind::Other => libc::EIO,
        }
    }

    /// The label failures of this kind are counted under (`kind="..."`).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Changed => "changed",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::Auth => "auth",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unverifiable => "unverifiable",
            ErrorKind::Transient => "transient",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Config => "config",
            ErrorKind::Other => "other",
        }
    }

    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::NotFound,
        ErrorKind::Changed,
        ErrorKind::AlreadyExists,
        ErrorKind::NoSpace,
        ErrorKind::Auth,
        ErrorKind::Corrupt,
        ErrorKind::Unverifiable,
        ErrorKind::Transient,
        ErrorKind::Cancelled,
        ErrorKind::Config,
        ErrorKind::Other,
    ];
}

/// An error that knows its [`ErrorKind`].
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// The kind of a local I/O error: a full disk (or quota) is [`ErrorKind::NoSpace`], the
/// one place that decides it; anything else is [`ErrorKind::Other`] (a missing cache file
/// is adlsfs's problem, not a missing blob).
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_label_and_an_errno() {
        let labels: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
        let table = [
            (ErrorKind::NotFound, libc::ENOENT),
            (ErrorKind::Changed, libc::ESTALE),
            (ErrorKind::AlreadyExists, libc::EEXIST),
            (ErrorKind::NoSpace, libc::ENOSPC),
            (ErrorKind::Auth, libc::EACCES),
            (ErrorKind::Corrupt, libc::EIO),
            (ErrorKind::Transient, libc::EIO),
        ];
        for (kind, errno) in table {
            assert_eq!(kind.errno(), errno, "{kind:?}");
        }
    }

    #[test]
    fn a_full_disk_is_no_space_whichever_errno_says_it() {
        for (raw, kind) in [
            (libc::ENOSPC, ErrorKind::NoSpace),
            (libc::EDQUOT, ErrorKind::NoSpace),
            (libc::ENOENT, ErrorKind::Other),
            (libc::EIO, ErrorKind::Other),
        ] {
            assert_eq!(io_kind(&std::io::Error::from_raw_os_error(raw)), kind);
        }
    }
}
