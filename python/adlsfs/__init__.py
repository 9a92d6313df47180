"""thds.core `Source`s for files on an adlsfs mount, without reading them.

An adlsfs mount exposes each file's blob URI and digests as extended attributes
(`user.adls.uri`, `user.hash.<algo>`; see the project's DESIGN contract). This module
turns them into thds.core objects:

- `source(path)`: a `Source` whose URI is the blob's `adls://` URI and whose hash is the
  mount's xxh3_128 digest; no byte of the file is read. Off a mount: plain `from_file`.
- `uri_hook`: a hook for `thds.core.uri_assign.add_hook`, so `from_file(mounted_path)`
  gets the blob's URI (it still reads the file to hash it unless given `hash=`).
- `digests(path)`: every `user.hash.*` digest as `Hash`es keyed by thds algo names.
- `is_mounted(path)`: whether `path` is on an adlsfs mount.

"On an adlsfs mount" means: the mount that holds the path's real location (the longest
mountpoint prefix in /proc/self/mountinfo) is an adlsfs one, that is its filesystem type
is `fuse.adlsfs` (mount(8), fstab and fusermount3 record the subtype), or it is `fuse`
with a source of the form `adls://...` (the daemon mounting directly as root records
plain `fuse` and its location, always in `adls://` form, as the source). The xattrs
alone are not trusted, since any filesystem can carry a `user.adls.uri`.
"""

import logging
import os
import time
import typing as ty

from thds.core import source as _source
from thds.core.hashing import Hash

__all__ = ["source", "uri_hook", "digests", "is_mounted", "FSTYPE"]

logger = logging.getLogger(__name__)

FSTYPE = "fuse.adlsfs"
XATTR_URI = "user.adls.uri"
XATTR_HASH_PREFIX = "user.hash."
XXH3 = "xxh3_128"

PathLike = ty.Union[str, "os.PathLike[str]"]


def _unescape(field: str) -> str:
    """Undoes mountinfo's octal escapes of space, tab, newline and backslash."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts() -> ty.List[ty.Tuple[str, bool]]:
    """(mountpoint, is adlsfs) of every mount this process sees, in mountinfo order."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            # id parent major:minor root mountpoint options [optional...] - fstype source super
            left, sep, right = line.partition(" - ")
            fields = left.split(" ")
            if not sep or len(fields) < 5:
                continue
            fstype, mount_source = (right.split(" ") + [""])[:2]
            adlsfs = fstype == FSTYPE or (fstype == "fuse" and mount_source.startswith("adls://"))
            mounts.append((_unescape(fields[4]), adlsfs))
    return mounts


def is_mounted(path: PathLike) -> bool:
    """True when the mount holding `path`'s real location is an adlsfs mount."""
    real = os.path.realpath(path)
    best, adlsfs = "", False
    for mountpoint, is_adlsfs in _mounts():  # a later mount over the same point wins
        inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best):
            best, adlsfs = mountpoint, is_adlsfs
    return adlsfs


def _blob_uri(path: PathLike) -> str:
    return os.getxattr(path, XATTR_URI).decode("utf-8")


def _xxh3(path: PathLike) -> Hash:
    """The mount's xxh3_128 digest. A blob recorded without one is materialised and hashed
    by the daemon while this call waits; the debug log says how long that took."""
    started = time.monotonic()
    digest = os.getxattr(path, XATTR_HASH_PREFIX + XXH3)
    logger.debug(
        "adlsfs: %s of %s from the mount in %.3fs (from blob metadata, or materialised "
        "and hashed by the daemon when the blob has none)",
        XXH3,
        path,
        time.monotonic() - started,
    )
    return Hash(XXH3, digest)


def source(path: PathLike) -> _source.Source:
    """A thds.core `Source` for `path`. On an adlsfs mount its URI is the blob's `adls://`
    URI, its hash the xxh3_128 digest, its size the file's and its local path `path`, and
    no byte of the file is read. Anywhere else: `thds.core.source.from_file(path)`."""
    if not is_mounted(path):
        return _source.from_file(path)
    return _source.from_file(path, hash=_xxh3(path), uri=_blob_uri(path))


def uri_hook(path: PathLike) -> str:
    """A `thds.core.uri_assign` hook: the blob URI of a file on an adlsfs mount, else ""."""
    if not is_mounted(path) or os.path.isdir(path):
        return ""
    return _blob_uri(path)


def digests(path: PathLike) -> ty.Dict[str, Hash]:
    """Every `user.hash.<algo>` digest of a mounted file, as `{algo: Hash}`; `{}` off a
    mount. Asking for xxh3_128 of a blob without one materialises it (see `source`)."""
    if not is_mounted(path):
        return {}
    found = {}
    for name in os.listxattr(path):
        if name.startswith(XATTR_HASH_PREFIX):
            algo = name[len(XATTR_HASH_PREFIX) :]
            found[algo] = _xxh3(path) if algo == XXH3 else Hash(algo, os.getxattr(path, name))
    return found
