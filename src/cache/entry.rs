//! What the cache records with each entry, as extended attributes on the cache file: the
//! blob's URI, its ETag and the content's xxh3_128. A later process (or `adlsfs cache`)
//! then knows what a file is and what it should hash to without re-hashing or a network
//! call. Filesystems without user xattrs just lose this: the digest is recomputed on
//! demand and the URI is read back from the path.
//!
//! An entry's last use is its modification time, touched on each open: entries are
//! immutable, and mtime is shared by every process using the cache with no index to lock.

use crate::digest::Xxh3Digest;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

const XATTR_DIGEST: &str = "user.adlsfs.xxh3_128";
const XATTR_URI: &str = "user.adlsfs.uri";
const XATTR_ETAG: &str = "user.adlsfs.etag";
/// Opens within this long of the last recorded use do not write the timestamp again.
const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryAttrs {
    pub uri: Option<String>,
    pub etag: Option<String>,
    pub xxh3: Option<Xxh3Digest>,
}

/// Records the entry's identity and digest; best effort (see the module docs).
pub fn write_attrs(path: &Path, attrs: &EntryAttrs) {
    let mut pairs: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(d) = &attrs.xxh3 {
        pairs.push((XATTR_DIGEST, d.as_bytes().to_vec()));
    }
    if let Some(u) = &attrs.uri {
        pairs.push((XATTR_URI, u.as_bytes().to_vec()));
    }
    if let Some(e) = &attrs.etag {
        pairs.push((XATTR_ETAG, e.as_bytes().to_vec()));
    }
    for (name, value) in pairs {
        if let Err(e) = set_xattr(path, name, &value) {
            tracing::debug!(path = %path.display(), error = %e, "cache filesystem refused an xattr");
            return;
        }
    }
}

pub fn read_attrs(path: &Path) -> EntryAttrs {
    let text = |name| {
        get_xattr(path, name)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    };
    EntryAttrs {
        uri: text(XATTR_URI),
        etag: text(XATTR_ETAG),
        xxh3: get_xattr(path, XATTR_DIGEST)
            .ok()
            .and_then(|v| Xxh3Digest::from_slice(&v).ok()),
    }
}

pub fn read_digest(path: &Path) -> Option<Xxh3Digest> {
    let value = get_xattr(path, XATTR_DIGEST).ok()?;
    Xxh3Digest::from_slice(&value).ok()
}

/// Marks the open entry `file` as used now, for least-recently-used eviction.
pub fn touch(file: &std::fs::File, last_use: SystemTime) {
    let stale = SystemTime::now()
        .duration_since(last_use)
        .is_ok_and(|age| age >= TOUCH_GRANULARITY);
    if stale {
        let now = std::fs::FileTimes::new().set_modified(SystemTime::now());
        if let Err(e) = file.set_times(now) {
            tracing::debug!(error = %e, "could not record a cache entry's use");
        }
    }
}

fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(std::io::Error::other)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = c_string(path.as_os_str().as_bytes())?;
    let name = c_string(name.as_bytes())?;
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_xattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let path = c_string(path.as_os_str().as_bytes())?;
    let name = c_string(name.as_bytes())?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_on_a_filesystem_with_user_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        std::fs::write(&path, b"x").unwrap();
        let attrs = EntryAttrs {
            uri: Some("adls://a/c/dir/ünï name".into()),
            etag: Some("\"0x1\"".into()),
            xxh3: Some(crate::digest::xxh3_128(b"x")),
        };
        // The cache directory's filesystem must keep user xattrs, as ext4, xfs and tmpfs
        // do; if the temporary directory's does not, this test fails rather than pass
        // without checking anything.
        set_xattr(&path, "user.probe", b"1").expect("user xattrs on the test filesystem");
        write_attrs(&path, &attrs);
        assert_eq!(read_attrs(&path), attrs);
        assert_eq!(read_digest(&path), attrs.xxh3);
    }

    #[test]
    fn touch_moves_the_last_use_forward_only_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        std::fs::write(&path, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(old))
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        touch(&file, SystemTime::now());
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            old,
            "recent use: no write"
        );
        touch(&file, old);
        let now = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(now > old + Duration::from_secs(3000));
    }
}
