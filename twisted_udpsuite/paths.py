"""
Safe request paths and atomic uploads, shared by the TFTP server and the file server.

Every file name that arrives from the network goes through L{safeDescendant}; every upload
goes through L{AtomicFileWriter}.  Twisted's own helpers are not enough on their own:
C{FilePath.preauthChild} checks containment with a string prefix (C{../tftp2/x} escapes
from C{/srv/tftp}), C{FilePath.child("")} is the parent itself, and C{FilePath.realpath()}
only resolves a path that is I{itself} a symlink, not a symlinked directory above it.  So
this module folds with C{child()} and checks with C{os.path.realpath}, segment by segment.

Request syntax accepted by L{safeDescendant}:

  - UTF-8 text (bytes are decoded strictly), C{/} separated; leading C{/}s are dropped,
    so C{/pxelinux.0} is C{<root>/pxelinux.0} and C{/srv/tftp/x} is C{<root>/srv/tftp/x};
  - C{""} and C{"/"} name the root itself (callers decide if a directory is acceptable);
  - refused: NUL and other C0 control characters and DEL, empty segments after the leading
    slashes (C{a//b}, C{a/}), C{.} and C{..} segments, a drive-letter first segment (C{C:},
    C{C:x}), segments over 255 bytes or results over 4095 bytes, and backslashes, unless the
    caller passes C{backslashSeparator=True} (some PXE ROMs send C{\\boot\\x}), in which
    case C{\\} separates like C{/}.  Other colons are ordinary characters on POSIX (and
    C{FilePath.child} refuses them on Windows); Windows device names such as C{CON} are
    ordinary names on POSIX and are allowed.

Hard links cannot be told apart from ordinary files by path; they are harmless to
uploads because L{AtomicFileWriter} publishes a new inode instead of writing in place.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from types import TracebackType

from twisted.python.filepath import FilePath, InsecurePath

__all__ = [
    "AtomicFileWriter",
    "UnsafePath",
    "STALE_TEMPORARY_AGE",
    "checkWritable",
    "findStaleTemporaryFiles",
    "isTemporaryName",
    "isWithin",
    "relativeName",
    "requestSegments",
    "safeDescendant",
]

_NAME_MAX = 255
_PATH_MAX = 4095
_TEMP_SUFFIX = ".part"
# Room for ".", ".", 12 hex digits and ".part" inside NAME_MAX.
_TEMP_STEM_MAX = _NAME_MAX - 2 - 12 - len(_TEMP_SUFFIX)
_FORBIDDEN_CHARS = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
_DRIVE = re.compile(r"[A-Za-z]:")
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.part", re.DOTALL)


class UnsafePath(ValueError):
    """
    A request path that must not be served: it escapes the root or is malformed.

    Servers map it to their "access violation" / "file not found" reply; C{reason} is for
    logs, not for the peer.
    """

    def __init__(self, request: str | bytes, reason: str) -> None:
        super().__init__(f"unsafe path {request!r}: {reason}")
        self.request = request
        self.reason = reason


def _isContained(rootReal: str, real: str) -> bool:
    """
    Compare whole path segments, so C{/srv/tftp2} is not inside C{/srv/tftp}.
    """
    try:
        return os.path.commonpath([rootReal, real]) == rootReal
    except ValueError:
        return False


def _realText(path: FilePath[str]) -> str:
    return os.path.realpath(os.fsdecode(path.path))


def requestSegments(request: str | bytes, *, backslashSeparator: bool = False) -> list[str]:
    """
    The path segments of an untrusted request, checked by the rules of L{safeDescendant}
    (which resolves them under a root), or raise L{UnsafePath}; C{[]} names the root.
    For stores that are not directories (an HTTP origin's URL paths).
    """
    if isinstance(request, bytes):
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafePath(request, "not valid UTF-8") from None
    else:
        text = request
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafePath(request, "not encodable as UTF-8") from None

    if len(text.encode("utf-8")) > _PATH_MAX:
        raise UnsafePath(request, "too long")
    if not _FORBIDDEN_CHARS.isdisjoint(text):
        raise UnsafePath(request, "contains NUL or a control character")
    if "\\" in text:
        if not backslashSeparator:
            raise UnsafePath(request, "contains a backslash")
        text = text.replace("\\", "/")

    text = text.lstrip("/")
    segments = text.split("/") if text else []
    if segments and _DRIVE.match(segments[0]):
        raise UnsafePath(request, "starts with a drive letter")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise UnsafePath(request, f"has an empty, '.' or '..' segment ({segment!r})")
        if len(segment.encode("utf-8")) > _NAME_MAX:
            raise UnsafePath(request, "has a name longer than 255 bytes")

    return segments


def safeDescendant(
    root: FilePath[str], request: str | bytes, *, backslashSeparator: bool = False
) -> FilePath[str]:
    """
    Resolve an untrusted request to a path inside C{root}, or raise L{UnsafePath}.

    The result is the I{resolved} path (symlinks followed, as by C{os.path.realpath}), so
    what the caller opens is exactly what was checked: retargeting an existing symlink
    after the check cannot redirect the open.  The cost: names are the real ones (log the
    request for what the peer asked), and a root given through a symlink is not C{==} to
    the results; use L{isWithin} and L{relativeName}.  Replacing a real directory by a
    symlink between check and open is still a race that only C{openat}/C{O_NOFOLLOW} would
    close; it needs write access to the root outside this program.

    A path that does not exist yet (an upload) is resolved as far as it exists; the rest
    has no C{..} in it, so it cannot climb out.  A dangling symlink is resolved to its
    target, so it cannot be used to create a file outside the root.
    """
    segments = requestSegments(request, backslashSeparator=backslashSeparator)
    textRoot = root.asTextMode()
    result = textRoot
    try:
        for segment in segments:
            result = result.child(segment)
    except InsecurePath as e:
        raise UnsafePath(request, f"refused by FilePath.child: {e}") from None

    rootReal = _realText(textRoot)
    real = os.path.realpath(result.path)
    if not _isContained(rootReal, real):
        raise UnsafePath(request, "resolves outside the root")
    if len(os.fsencode(real)) > _PATH_MAX:
        raise UnsafePath(request, "resolved path too long")
    return FilePath(real)


def isWithin(root: FilePath[str], path: FilePath[str]) -> bool:
    """
    Whether C{path}, symlinks resolved, is C{root} or below it (by segments, not prefix).
    """
    return _isContained(_realText(root), _realText(path))


def relativeName(root: FilePath[str], path: FilePath[str]) -> str:
    """
    C{path} relative to C{root} with C{/} separators, for log lines; C{"."} for the root.

    Both are resolved first, so it works on results of L{safeDescendant} even when the
    root was given through a symlink.  Raises C{ValueError} if C{path} is outside.
    """
    rootReal = _realText(root)
    real = _realText(path)
    if not _isContained(rootReal, real):
        raise ValueError(f"{real!r} is not inside {rootReal!r}")
    rel = os.path.relpath(real, rootReal)
    return rel.replace(os.sep, "/")


def isTemporaryName(name: str) -> bool:
    """
    Whether C{name} looks like an in-progress upload of L{AtomicFileWriter}.

    A file server's directory listing should hide these: a half-written upload is not a
    file yet, and listing it would let a peer read it under its unguessable name.
    """
    return _TEMP_NAME.fullmatch(name) is not None


STALE_TEMPORARY_AGE = 3600.0
"""Seconds without a write after which a temporary upload file counts as left behind: far
longer than any live upload goes without writing (a TFTP upload waits 160 s at most for its
first block), so another process's upload in progress is never taken for litter."""


def findStaleTemporaryFiles(
    root: FilePath[str], minimumAge: float = STALE_TEMPORARY_AGE, now: float | None = None
) -> list[FilePath[str]]:
    """
    The temporary files of L{AtomicFileWriter} that interrupted runs (a crash, a SIGKILL)
    left below C{root}: regular files whose name is exactly its pattern (L{isTemporaryName})
    and that nobody has written for C{minimumAge} seconds. Nothing else: no other name, no
    symlink, nothing outside C{root} (directory symlinks are not followed).
    """
    now = time.time() if now is None else now
    found = []
    for directory, _, names in os.walk(os.fsdecode(root.path), followlinks=False):
        for name in names:
            if not isTemporaryName(name):
                continue
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:  # gone meanwhile
                continue
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= minimumAge:
                found.append(FilePath(path))
    return sorted(found, key=lambda p: p.path)


def checkWritable(target: FilePath[str], overwrite: bool) -> None:
    """
    Fail early (before a TFTP OACK or a file-server "go ahead") if an upload cannot land.

    Raises C{IsADirectoryError} if C{target} is (or links to) a directory, and
    C{FileExistsError} if it exists (a dangling symlink counts) and C{overwrite} is false.
    A missing parent directory is reported later by L{AtomicFileWriter} as
    C{FileNotFoundError}: uploads never create directories.
    """
    path = os.fsdecode(target.path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)


def _fsyncDirectory(path: str) -> None:
    """
    Make the rename/link durable; some filesystems refuse fsync on directories.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class AtomicFileWriter:
    """
    Write an upload to a hidden temporary sibling and publish it whole, or not at all.

    Readers see the old file (or none) until L{commit}; an interrupted transfer, a disk
    full or a crash never leaves a truncated file under the real name.  The temporary
    file (C{.<name>.<12 hex>.part}, same directory, so the publish is a rename) is created
    with C{O_EXCL} and mode C{0o666} minus the umask.

    A failing L{write} or L{commit} removes the temporary file and re-raises the
    C{OSError} unchanged (C{ENOSPC}, C{EDQUOT}, ...), so callers map it to their
    protocol's error.  As a context manager it aborts unless L{commit} was called.
    """

    bytesWritten: int
    target: FilePath[str]
    tempPath: FilePath[str]

    def __init__(self, target: FilePath[str], *, overwrite: bool) -> None:
        self.target = target.asTextMode()
        self.overwrite = overwrite
        self.bytesWritten = 0
        self._done = False
        checkWritable(self.target, overwrite)
        directory = self.target.dirname()
        stem = os.fsencode(self.target.basename())[:_TEMP_STEM_MAX]
        stemText = os.fsdecode(stem)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_BINARY", 0)
        for attempt in range(10):
            name = f".{stemText}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
            tempPath = os.path.join(directory, name)
            try:
                self._fd = os.open(tempPath, flags, 0o666)
            except FileExistsError:
                if attempt == 9:
                    raise
                continue
            break
        self.tempPath = FilePath(tempPath)

    def write(self, data: bytes) -> None:
        """
        Append C{data}; on C{OSError} the upload is aborted and the error re-raised.
        """
        if self._done:
            raise ValueError("write() after commit() or abort()")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.bytesWritten += n
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """
        Flush, fsync and publish under the target name, then fsync the directory.

        With C{overwrite=False} the publish is C{os.link} (fails with C{FileExistsError}
        if the target appeared since construction, which leaves it intact); filesystems
        without hard links fall back to a check followed by C{os.replace}, which is racy.
        """
        if self._done:
            raise ValueError("commit() after commit() or abort()")
        temp = self.tempPath.path
        target = self.target.path
        try:
            os.fsync(self._fd)
            self._closeFd()
            if self.overwrite:
                os.replace(temp, target)
            else:
                self._publishNoClobber(temp, target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        _fsyncDirectory(self.target.dirname())

    def _publishNoClobber(self, temp: str, target: str) -> None:
        try:
            os.link(temp, target, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
            os.replace(temp, target)
            return
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass

    def _closeFd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def abort(self) -> None:
        """
        Close and remove the temporary file; the target is untouched.  Idempotent.
        """
        if self._done:
            return
        self._done = True
        try:
            self._closeFd()
        finally:
            try:
                os.unlink(self.tempPath.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> AtomicFileWriter:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        excValue: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()
