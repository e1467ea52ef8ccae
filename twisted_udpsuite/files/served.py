"""
What the file server serves: a request's path confined below the root, a regular file
opened to send, the identity of its version, and the status that answers an C{OSError}.

Shared by the framed protocol (L{twisted_udpsuite.files.server}) and the plain one
(L{twisted_udpsuite.files.plain}).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as statModule

from twisted.python.filepath import FilePath

from twisted_udpsuite.files.wire import Status
from twisted_udpsuite.paths import isTemporaryName, safeDescendant

__all__ = ["errorStatus", "fileKind", "fileVersion", "openRegularFile", "resolveFile"]


def fileVersion(st: os.stat_result) -> str:
    """
    The identity of one version of a file: changes when it is rewritten or replaced.

    A hash of device, inode, size, mtime and ctime (ns), so it says nothing about the
    server's inode numbers; 16 hex digits.
    """
    key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return hashlib.blake2b(key.encode("ascii"), digest_size=8).hexdigest()


def fileKind(mode: int) -> str:
    """What a C{st_mode} is, as LIST and STAT name it: C{file}, C{dir} or C{other}."""
    if statModule.S_ISREG(mode):
        return "file"
    if statModule.S_ISDIR(mode):
        return "dir"
    return "other"


def resolveFile(root: FilePath[str], request: str | bytes) -> FilePath[str]:
    """
    The path a request names below C{root}: L{safeDescendant}'s confinement (raises
    L{UnsafePath}), and an upload in progress (L{isTemporaryName}) is not found, as over
    TFTP and HTTP (C{FileNotFoundError}).
    """
    path = safeDescendant(root, request)
    if isTemporaryName(path.basename()):
        raise FileNotFoundError(errno.ENOENT, "not found")
    return path


def openRegularFile(path: FilePath[str]) -> tuple[int, os.stat_result]:
    """
    Open C{path} to send it: a descriptor and its C{fstat}.  Raises C{OSError}s that
    L{errorStatus} maps (a directory, a FIFO or device: refused without blocking).
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path.path, flags)
    try:
        st = os.fstat(fd)
        if statModule.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not statModule.S_ISREG(st.st_mode):
            raise PermissionError(errno.EACCES, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def errorStatus(error: OSError) -> tuple[int, str]:
    """The status and message that answer C{error} from resolving or opening a path."""
    if isinstance(error, FileNotFoundError):
        return Status.NOT_FOUND, "not found"
    if isinstance(error, PermissionError):
        return Status.FORBIDDEN, error.strerror or str(error)
    if isinstance(error, IsADirectoryError | NotADirectoryError):
        return Status.CONFLICT, error.strerror or str(error)
    return Status.INTERNAL, error.strerror or "I/O error"
