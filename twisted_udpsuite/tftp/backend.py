# -*- test-case-name: tests.tftp.test_backend -*-
"""
Where the TFTP server gets files and puts uploads: an interface, and a directory behind it.

An application can serve generated content (a PXE config per client MAC) or another store by
providing L{IBackend}; every method may answer with a Deferred. Failures are the classes of
L{twisted_udpsuite.tftp.errors} (L{FileNotFound} → ERROR 1, L{AccessViolation} → 2,
L{DiskFull} → 3, L{FileExists} → 6); anything else becomes ERROR 0.

L{FilesystemBackend} serves one root directory, safe by default: read-only, names confined
by L{safeDescendant}, only regular files (no directories, FIFOs or devices, checked on the
open descriptor), uploads written to a temporary sibling and published whole
(L{AtomicFileWriter}).

How a requested name becomes a path (the rule, for PXE and Windows clients as for others):
  1. with a rule file, L{RemappingBackend} rewrites the raw name first, exactly as
     tftpd-hpa's C{-m} would (so rules written for it see what they saw there);
  2. a backslash separates like C{/} (Windows and some PXE ROMs send C{\\boot\\pxelinux.0});
     leading separators are dropped (C{/pxelinux.0} is C{ROOT/pxelinux.0}, as tftpd-hpa's
     C{-s}); a drive letter (C{C:}), C{.}/C{..}, empty segments and control characters
     are refused (ERROR 2);
  3. with C{clientRoots}, C{ROOT/<client address>/} is looked in first;
  4. with C{ignoreCase}, a name that does not exist as written matches an existing one
     that differs only in case (the first in sorted order if several do);
  5. the result, symlinks resolved, must be inside the root (or the client's directory).
"""

from __future__ import annotations

import io
import math
import mmap
import os
import stat
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import Attribute, Interface, implementer

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.paths import (
    AtomicFileWriter,
    UnsafePath,
    findStaleTemporaryFiles,
    isTemporaryName,
    relativeName,
    requestSegments,
    safeDescendant,
)
from twisted_udpsuite.tftp.errors import (
    AccessViolation,
    DiskFull,
    FileExists,
    FileNotFound,
    TFTPError,
    errorForOSError,
)
from twisted_udpsuite.tftp.remap import RemapRefused, RemapRules

__all__ = [
    "CLIENT_ROOTS",
    "AccessViolation",
    "DiskFull",
    "FileExists",
    "FileNotFound",
    "FilesystemBackend",
    "IBackend",
    "IReader",
    "IWriter",
    "RemappingBackend",
]

_READ_BUFFER = 256 * 1024
_WRITE_BUFFER = 256 * 1024

Peer = tuple[str, int]


def _openError(error: OSError) -> TFTPError:
    return errorForOSError(error, "Cannot open file")


CLIENT_ROOTS = ("fallback", "isolate")
"""L{FilesystemBackend}'s C{clientRoots} modes: C{ROOT/<client address>/} first, then
C{ROOT}; or C{ROOT/<client address>/} only, and nothing for a client without one."""


class IReader(Interface):
    """A file being downloaded."""

    size = Attribute("Size in bytes, or None if unknown (then no tsize is offered).")

    def read(n: int) -> bytes | Deferred[bytes]:
        """
        Up to C{n} bytes (fewer is fine; C{b""} only at the end). A reader may also offer a
        synchronous C{readinto(buffer) -> int}, which the engine prefers for large blocks,
        or a C{mapping}: a read-only C{memoryview} of the whole file (C{size} bytes), which
        it sends from without reading or copying at all.
        """

    def close() -> None:
        """Release the file; called once, whatever the outcome."""


class IWriter(Interface):
    """An upload in progress."""

    def write(data: bytes) -> None | Deferred[None]:
        """Append C{data}; raise (or fail) with L{DiskFull} when it does not fit."""

    def finish() -> None | Deferred[None]:
        """The upload is complete: publish it (before the last ACK goes out)."""

    def abort() -> None:
        """The upload failed: discard it, leaving any older file intact."""


class IBackend(Interface):
    """The files a TFTP server serves."""

    def openRead(name: bytes, peer: Peer) -> IReader | Deferred[IReader]:
        """Open C{name} (the raw request bytes) for C{peer}, or fail with a TFTP error."""

    def openWrite(name: bytes, peer: Peer, size: int | None) -> IWriter | Deferred[IWriter]:
        """Start an upload of C{size} bytes (None: not announced), or fail."""


@implementer(IReader)
class FileReader:
    """
    A regular file, read through a large buffer so small blocks cost no syscall each, and
    mapped into memory so large blocks are sent straight from the page cache (C{mapping}).

    The mapping is as long as the file was when opened (its C{tsize}). Should the file
    shrink meanwhile, sending from past its new end fails with C{EFAULT} (the kernel's
    copy fails; no C{SIGBUS}, as a copy in Python would get), and the transfer with it.
    """

    def __init__(self, fd: int, size: int) -> None:
        self._file = io.BufferedReader(io.FileIO(fd, "r"), _READ_BUFFER)  # closed by close()
        self.size: int | None = size
        self.read = self._file.read
        self.readinto = self._file.readinto
        self.mapping: memoryview | None = None
        self._mapped: mmap.mmap | None = None
        if size:
            try:
                mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            except (OSError, ValueError):  # a file system that cannot map: read it instead
                return
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            self._mapped = mapped
            self.mapping = memoryview(mapped)

    def close(self) -> None:
        self._file.close()
        mapping, mapped, self.mapping, self._mapped = self.mapping, self._mapped, None, None
        if mapped is None:
            return
        # The map holds a descriptor of its own (a dup): unmap now, not at some later garbage
        # collection. Should a slice still be out (someone kept a block), the map goes when
        # that slice does.
        try:
            mapping.release()  # type: ignore[union-attr]
            mapped.close()
        except BufferError:
            pass


@implementer(IWriter)
class FileWriter:
    """An upload into an L{AtomicFileWriter}, buffered, with a running size limit."""

    def __init__(self, atomic: AtomicFileWriter, limit: int | None) -> None:
        self._atomic = atomic
        self._limit = limit
        self._buffer = bytearray()
        self.received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._limit is not None and self.received > self._limit:
            self.abort()
            raise DiskFull(f"Upload exceeds the limit of {self._limit} bytes")
        buffer = self._buffer
        buffer += data
        if len(buffer) >= _WRITE_BUFFER:
            self._drain()

    def _drain(self) -> None:
        try:
            self._atomic.write(bytes(self._buffer))
        except OSError as e:
            raise _openError(e) from e
        finally:
            self._buffer.clear()

    def finish(self) -> None:
        try:
            if self._buffer:
                self._drain()
            self._atomic.commit()
        except OSError as e:
            self._atomic.abort()
            raise _openError(e) from e

    def abort(self) -> None:
        self._buffer.clear()
        self._atomic.abort()


@implementer(IBackend)
class FilesystemBackend:
    """
    Serve the files under C{root}.

    @param writable: Accept uploads at all (off by default: TFTP has no authentication).
    @param allowCreate: Uploads may create new files.
    @param allowOverwrite: Uploads may replace existing files (atomically).
    @param maxUploadSize: Largest upload in bytes, checked as data arrives (C{None}: none).
    @param keepStaleUploads: L{cleanStaleUploads} only reports what it finds.
    @param ignoreCase: A name matches an existing file whatever its case (Windows-made
        trees served to firmware that asks for C{PXELINUX.0}).
    @param clientRoots: C{None}, or a mode of L{CLIENT_ROOTS}: each client has its own
        directory C{ROOT/<address>/} (C{192.0.2.7}, C{2001:db8::7}; a V4-mapped client by
        its IPv4 address). C{"fallback"}: a file there wins over the same name in the root
        (reads), and uploads go there if it exists. C{"isolate"}: a client sees only its
        own directory; one without a directory is refused (ERROR 2).
    """

    log = Logger(namespace="twisted_udpsuite.tftp.backend")

    def __init__(
        self,
        root: FilePath[str],
        *,
        writable: bool = False,
        allowCreate: bool = True,
        allowOverwrite: bool = False,
        maxUploadSize: int | None = None,
        keepStaleUploads: bool = False,
        ignoreCase: bool = False,
        clientRoots: str | None = None,
    ) -> None:
        if clientRoots is not None and clientRoots not in CLIENT_ROOTS:
            raise ValueError(f"clientRoots must be one of {CLIENT_ROOTS}, not {clientRoots!r}")
        self.root = root
        self.writable = writable
        self.allowCreate = allowCreate
        self.allowOverwrite = allowOverwrite
        self.maxUploadSize = maxUploadSize
        self.keepStaleUploads = keepStaleUploads
        self.ignoreCase = ignoreCase
        self.clientRoots = clientRoots

    def cleanStaleUploads(self) -> list[FilePath[str]]:
        """
        At start: remove (or, with C{keepStaleUploads}, only report) the temporary files
        that uploads of earlier runs left in a writable root when they were killed
        (L{findStaleTemporaryFiles}: their exact name pattern, an hour unwritten), and log
        what was done. Returns the files found.
        """
        if not self.writable:
            return []
        stale = findStaleTemporaryFiles(self.root)
        self._reportYoungUploads(stale)
        if not stale:
            return stale
        total = 0
        names = []
        for path in stale:
            try:
                size = path.getsize()
                if not self.keepStaleUploads:
                    path.remove()
            except OSError as e:  # gone meanwhile (another process cleaning), or not ours
                self.log.debug("cannot clean {path}: {error}", path=path.path, error=e)
                continue
            total += size
            names.append(relativeName(self.root, path))
        self.log.warn(
            "{action} {count} unfinished uploads ({bytes} bytes) that an earlier run left "
            "in {root}: {names}",
            action="kept (--keep-stale-uploads)" if self.keepStaleUploads else "removed",
            count=len(names),
            bytes=total,
            root=self.root.path,
            names=" ".join(names),
            staleUploads=names,
        )
        return stale

    def _reportYoungUploads(self, stale: list[FilePath[str]]) -> None:
        """
        Name the temporary upload files too young to be taken for litter: after a crash
        and a quick restart, those of the uploads the crash cut (another process's live
        upload looks the same, so they stay until a start an hour after their last write).
        """
        every = findStaleTemporaryFiles(self.root, minimumAge=-math.inf)
        young = [p for p in every if p not in stale]
        if not young:
            return
        names = [relativeName(self.root, path) for path in young]
        self.log.warn(
            "left {count} unfinished uploads in {root} written less than an hour ago (cut by "
            "a crash, or another process's uploads): {names}",
            count=len(names),
            root=self.root.path,
            names=" ".join(names),
            youngUploads=names,
        )

    def _bases(self, peer: Peer) -> list[FilePath[str]]:
        """The directories to look in for C{peer}, first first (see C{clientRoots})."""
        if self.clientRoots is None:
            return [self.root]
        try:
            own = safeDescendant(self.root, hostOf(peer[0]))
        except UnsafePath:  # not an address a directory can be named after
            own = None
        bases = [own] if own is not None and own.isdir() else []
        if self.clientRoots == "fallback":
            bases.append(self.root)
        if not bases:
            raise AccessViolation("No files for this client")
        return bases

    def _resolveIn(self, base: FilePath[str], name: bytes) -> FilePath[str]:
        try:
            path = safeDescendant(base, name, backslashSeparator=True)
            if self.ignoreCase and not os.path.lexists(path.path):
                path = safeDescendant(base, _caseless(base, name), backslashSeparator=True)
        except UnsafePath:
            raise AccessViolation("Access violation") from None
        if isTemporaryName(path.basename()):
            raise FileNotFound("File not found")
        return path

    def _resolve(self, name: bytes, peer: Peer, *, existing: bool) -> FilePath[str]:
        """
        The path for C{name}: in the first base where it exists (C{existing}: a read),
        or else in the last one (reads then fail with "not found").
        """
        bases = self._bases(peer)
        for base in bases[:-1]:
            path = self._resolveIn(base, name)
            if not existing or os.path.lexists(path.path):
                return path
        return self._resolveIn(bases[-1], name)

    def openRead(self, name: bytes, peer: Peer) -> IReader:
        """Open a regular file below the root; refuse everything else."""
        path = self._resolve(name, peer, existing=True)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_NOCTTY", 0)
        try:
            # O_NONBLOCK: opening a FIFO must not hang the reactor; checked on the descriptor.
            fd = os.open(path.path, flags)
        except OSError as e:
            raise _openError(e) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise AccessViolation("Not a regular file")
            os.set_blocking(fd, True)
            return FileReader(fd, st.st_size)
        except BaseException:
            os.close(fd)
            raise

    def openWrite(self, name: bytes, peer: Peer, size: int | None) -> IWriter:
        """Start an atomic upload below the root, if the policy allows this one."""
        if not self.writable:
            raise AccessViolation("Uploads are disabled")
        if size is not None and self.maxUploadSize is not None and size > self.maxUploadSize:
            raise DiskFull(f"Upload exceeds the limit of {self.maxUploadSize} bytes")
        path = self._resolve(name, peer, existing=False)
        try:
            st: Any = os.lstat(path.path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise _openError(e) from None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise AccessViolation("Not a regular file")
            if not self.allowOverwrite:
                raise FileExists("File already exists")
        elif not self.allowCreate:
            raise AccessViolation("Creating files is disabled")
        try:
            atomic = AtomicFileWriter(path, overwrite=self.allowOverwrite)
        except OSError as e:
            raise _openError(e) from None
        return FileWriter(atomic, self.maxUploadSize)


def _caseless(base: FilePath[str], name: bytes) -> str:
    """
    C{name} (already checked by L{safeDescendant}) with each segment spelt as an existing
    entry of its directory that differs only in case, where the segment as written does
    not exist; the rest as written.
    """
    directory = base.asTextMode().path
    spelt = []
    for segment in requestSegments(name, backslashSeparator=True):
        candidate = os.path.join(directory, segment)
        if not os.path.lexists(candidate):
            folded = segment.casefold()
            try:
                matches = sorted(e for e in os.listdir(directory) if e.casefold() == folded)
            except OSError:
                matches = []
            if matches:
                segment = matches[0]
                candidate = os.path.join(directory, segment)
        spelt.append(segment)
        directory = candidate
    return "/".join(spelt)


@implementer(IBackend)
class RemappingBackend:
    """
    Another backend, behind tftpd-hpa's filename remapping (L{RemapRules}): each request's
    raw name is rewritten before the backend sees it; a refusal by the rules is ERROR 2.
    The rewritten name is confined by the backend like any other.
    """

    log = Logger(namespace="twisted_udpsuite.tftp.backend")

    def __init__(self, backend: IBackend, rules: RemapRules) -> None:
        self.backend = IBackend(backend)
        self.rules = rules
        self.root = getattr(backend, "root", None)

    def _rewrite(self, name: bytes, peer: Peer, isRead: bool) -> bytes:
        text = name.decode("utf-8", "surrogateescape")
        try:
            result = self.rules.rewrite(text, isRead=isRead, client=peer[0])
        except RemapRefused as e:
            self.log.info(
                "remap rules refuse {name!r} for {peer}: {why}", name=text, peer=peer, why=e
            )
            raise AccessViolation(e.message) from None
        if result != text:
            self.log.debug("remapped {name!r} to {result!r}", name=text, result=result)
        return result.encode("utf-8", "surrogateescape")

    def openRead(self, name: bytes, peer: Peer) -> IReader | Deferred[IReader]:
        return self.backend.openRead(self._rewrite(name, peer, True), peer)

    def openWrite(self, name: bytes, peer: Peer, size: int | None) -> IWriter | Deferred[IWriter]:
        return self.backend.openWrite(self._rewrite(name, peer, False), peer, size)

    def cleanStaleUploads(self) -> list[FilePath[str]]:
        """The wrapped backend's (L{FilesystemBackend.cleanStaleUploads}), if it has one."""
        clean = getattr(self.backend, "cleanStaleUploads", None)
        return clean() if clean is not None else []
