"""
Where a FETCH body goes as it arrives: a part file (L{FetchSink}, resumable, spliced
where it can be) or any writer (L{StreamSink}); both hash it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from twisted_udpsuite.connections import IConnectionTransport
from twisted_udpsuite.files import partfile
from twisted_udpsuite.files.clientprotocol import NO_SPLICE, ResponseSink
from twisted_udpsuite.files.errors import InsufficientSpace
from twisted_udpsuite.files.hashing import StreamHasher
from twisted_udpsuite.files.partfile import PartFile
from twisted_udpsuite.files.wire import MalformedFrame, ResponseHead, Trailer

__all__ = ["FetchSink", "StreamSink", "Writer"]

#: Spliced bytes handed to the hasher at once (read back in one job).
HASH_RANGE = 1024 * 1024


class Writer(Protocol):
    """Where a streamed body goes: anything with C{write(bytes)} (standard output)."""

    def write(self, data: bytes, /) -> object:
        """Take the next bytes."""


class FetchSink(ResponseSink):
    """Writes a FETCH body to the part file as it arrives, hashing it."""

    def __init__(
        self,
        part: PartFile,
        held: int,
        progress: Callable[[int, int | None], None] | None,
    ) -> None:
        super().__init__()
        self.part = part
        self.held = held
        self.progress = progress
        self.fd = -1
        self.hasher: StreamHasher | None = None
        self.reactor: IReactorTime | None = None
        self.transport: IConnectionTransport | None = None
        self.received = 0
        self.written = 0
        self.total = 0
        self.trailer: Trailer | None = None
        #: Where the spliced bytes not yet given to the hasher start (-1: none).
        self._unhashed = -1
        self._readFd = -1
        self._spliceRefused = False
        self._spliced = False

    def onHead(self, head: ResponseHead) -> None:
        self.head = head
        if not head.ok:
            return
        version = head.version
        if version is None:
            raise MalformedFrame("FETCH answer without a version")
        self.total = head.offset + head.size
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if head.offset == 0:
            flags |= os.O_TRUNC
        elif head.offset != self.held:
            raise MalformedFrame("server resumed at an offset we did not ask for")
        self._checkSpace(head)
        self.hasher = StreamHasher(self.reactor, self._backlog)
        if head.offset:
            self.hasher.updateFromFile(os.open(self.part.path, os.O_RDONLY), head.offset)
        self.fd = os.open(self.part.path, flags, 0o666)
        os.lseek(self.fd, head.offset, os.SEEK_SET)
        if head.offset == 0:
            os.ftruncate(self.fd, 0)
        self.part.writeSidecar(version, self.total)
        self.written = head.offset
        if self.progress is not None:
            self.progress(self.written, self.total)

    def onData(self, data: bytes) -> None:
        if self.fd < 0:
            return
        if self._spliced:
            self._spliceEnded()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        assert self.hasher is not None
        self.hasher.update(data)
        self.received += len(data)
        self.written += len(data)
        if self.progress is not None:
            self.progress(self.written, self.total)

    def _checkSpace(self, head: ResponseHead) -> None:
        """
        Fail before writing if the filesystem cannot hold the rest of the file, rather
        than with ENOSPC after a long transfer (a restart at 0 frees the old part).
        """
        directory = os.path.dirname(self.part.path) or "."
        free = partfile.freeSpace(directory)
        if free is None:
            return
        if head.offset == 0:
            try:
                free += os.path.getsize(self.part.path)
            except OSError:
                pass
        if head.size > free:
            raise InsufficientSpace(
                f"not enough space in {directory}: {head.size} bytes to write, {free} free"
            )

    def canSplice(self) -> bool:
        return self.fd >= 0 and self.hasher is not None and not self._spliceRefused

    def onSpliced(self, pipe: int, length: int) -> None:
        """Move C{length} bytes from C{pipe} to the part file; hash them from there."""
        assert self.hasher is not None
        offset = self.written
        moved = 0
        try:
            while moved < length:
                n = os.splice(pipe, self.fd, length - moved, offset_dst=offset + moved)
                if not n:
                    raise OSError(errno.EIO, "spliced bytes vanished from the pipe")
                moved += n
        except OSError as e:
            if e.errno not in NO_SPLICE:
                raise
            # This filesystem takes no splice: copy what is in the pipe, and read the
            # rest the ordinary way (see canSplice).
            self._spliceRefused = True
            os.lseek(self.fd, offset + moved, os.SEEK_SET)  # splice left it behind
            while moved < length:
                data = os.read(pipe, length - moved)
                if not data:
                    raise OSError(errno.EIO, "spliced bytes vanished from the pipe") from e
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
                moved += len(data)
        self.received += length
        self.written += length
        self._spliced = True
        if self._unhashed < 0:
            self._unhashed = offset
        # Hand the hasher ranges of at least HASH_RANGE (a socket read may be small).
        if self.written - self._unhashed >= HASH_RANGE or self.written == self.total:
            self._hashSpliced()
        if self.progress is not None:
            self.progress(self.written, self.total)

    def _hashSpliced(self) -> None:
        """Give the hasher the spliced bytes it has not had yet (read back from the file)."""
        assert self.hasher is not None
        if self._unhashed < 0:
            return
        if self._readFd < 0:
            self._readFd = os.open(self.part.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        start, self._unhashed = self._unhashed, -1
        self.hasher.updateFromRange(os.dup(self._readFd), start, self.written - start)

    def _spliceEnded(self) -> None:
        """
        Body bytes come through L{onData} again after some were spliced (a splice was
        refused): hash the spliced ones first, and move the file position (which
        C{splice} with an offset leaves alone) to the end of what is written.
        """
        self._spliced = False
        self._hashSpliced()
        os.lseek(self.fd, self.written, os.SEEK_SET)

    def onEnd(self, trailer: Trailer | None) -> None:
        self.trailer = trailer
        self.deferred.callback(self.head)

    def _backlog(self, behind: bool) -> None:
        if self.transport is not None and self.transport.connected:  # type: ignore[attr-defined]
            if behind:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def close(self) -> None:
        if self.hasher is not None:
            self.hasher.abandon()
        for fd in (self.fd, self._readFd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._readFd = -1


class StreamSink(ResponseSink):
    """Passes a FETCH body on to a writer as it arrives, hashing it (no part file)."""

    def __init__(self, output: Writer, progress: Callable[[int, int | None], None] | None) -> None:
        super().__init__()
        self.output = output
        self.progress = progress
        self.hasher = hashlib.sha256()
        self.received = 0
        self.total = 0
        self.trailer: Trailer | None = None

    def onHead(self, head: ResponseHead) -> None:
        self.head = head
        if head.ok:
            self.total = head.size
            if self.progress is not None:
                self.progress(0, self.total)

    def onData(self, data: bytes) -> None:
        if self.head is None or not self.head.ok:
            return
        self.output.write(data)
        self.hasher.update(data)
        self.received += len(data)
        if self.progress is not None:
            self.progress(self.received, self.total)

    def onEnd(self, trailer: Trailer | None) -> None:
        self.trailer = trailer
        self.deferred.callback(self.head)
