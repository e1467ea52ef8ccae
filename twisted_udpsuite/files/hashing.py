"""
sha256 of a stream off the reactor thread, shared by the file server and client.

hashlib releases the GIL on large buffers, so a worker thread hashes while the reactor
thread moves bytes: the digest costs little wall time instead of adding to every
chunk.  Reactors without threads (test clocks) hash inline, with the same API.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred

__all__ = ["StreamHasher"]

#: (fd, offset, length, counted): hash that range of fd, then close fd; C{counted}: the
#: range is part of the backlog (L{StreamHasher.updateFromRange}).
_FileJob = tuple[int, int, int, bool]
#: Bytes read per C{preadv} when hashing from a file.
_READ_SIZE = 1 << 20


class _Digest(Protocol):
    """A C{hashlib} hash object, as far as L{_hashFd} uses it."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Hash C{data} next."""


def _hashFd(
    digest: _Digest, fd: int, length: int, offset: int = 0, buffer: memoryview | None = None
) -> None:
    """
    Feed C{length} bytes of C{fd} from C{offset} to C{digest}, then close C{fd}.

    @param buffer: where to read (the worker passes one buffer for all its jobs: a
        fresh one per job would cost page faults on every read).
    """
    try:
        if buffer is None:
            buffer = memoryview(bytearray(min(length, _READ_SIZE)))
        size = len(buffer)
        end = offset + length
        while offset < end:
            n = os.preadv(fd, [buffer[: min(end - offset, size)]], offset)
            if not n:
                raise OSError("file shrank while being hashed")
            digest.update(buffer[:n])
            offset += n
    finally:
        os.close(fd)


class StreamHasher:
    """
    The sha256 of the bytes given to L{update} (and L{updateFromFile}), in order.

    If the worker falls more than L{HIGH} bytes behind, C{backlog(True)} asks the caller
    to stop producing until C{backlog(False)} (under L{LOW} again): memory stays bounded.
    File ranges (L{updateFromRange}) wait in the page cache, not in this process, so
    they have a budget of their own, C{rangeHigh}: a larger one lets the reader run
    ahead of the hasher through a stall of either (on a busy machine) instead of
    stopping at once.

    @param reactor: provides C{callFromThread} to use a worker thread; else inline.
    @param high: the backlog (bytes) at which C{backlog(True)} is called.
    @param low: the backlog at which C{backlog(False)} is called.
    @param rangeHigh: the backlog of file ranges at which C{backlog(True)} is called
        (C{backlog(False)} once under a quarter of it).
    """

    def __init__(
        self,
        reactor: object,
        backlog: Callable[[bool], None],
        high: int = 4 * 1024 * 1024,
        low: int = 1024 * 1024,
        rangeHigh: int = 64 * 1024 * 1024,
    ) -> None:
        self.HIGH = high
        self.LOW = low
        self.RANGE_HIGH = rangeHigh
        self.RANGE_LOW = rangeHigh // 4
        self._digest = hashlib.sha256()
        self._backlog = backlog
        self._callFromThread = getattr(reactor, "callFromThread", None)
        self._finished: Deferred[str] = Deferred()
        self._pending = 0
        self._pendingRanges = 0
        self._paused = False
        self._abandoned = False
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | _FileJob | None] | None = None
        if self._callFromThread is not None:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, name="sha256", daemon=True).start()

    def update(self, data: bytes) -> None:
        """Hash C{data} next."""
        if self._abandoned:
            return
        if self._queue is None:
            self._digest.update(data)
            return
        self._enqueue(data, len(data), 0)

    def _enqueue(self, item: bytes | _FileJob, length: int, ranges: int) -> None:
        """
        Queue C{item}: C{length} bytes in memory, C{ranges} bytes of file ranges; ask
        the caller to pause if far behind.
        """
        assert self._queue is not None
        with self._lock:
            self._pending += length
            self._pendingRanges += ranges
            pause = not self._paused and (
                self._pending > self.HIGH or self._pendingRanges > self.RANGE_HIGH
            )
            if pause:
                self._paused = True
        self._queue.put(item)
        if pause:
            self._backlog(True)

    def updateFromFile(self, fd: int, length: int) -> None:
        """Hash the first C{length} bytes of C{fd} next; the hasher closes C{fd}."""
        if self._abandoned:
            os.close(fd)
        elif self._queue is None:
            _hashFd(self._digest, fd, length)
        else:
            self._queue.put((fd, 0, length, False))

    def updateFromRange(self, fd: int, offset: int, length: int) -> None:
        """
        Hash C{length} bytes of C{fd} from C{offset} next; the hasher closes C{fd}.

        For bytes that went to a file without passing through Python (the client's
        splice path): they are read back from the page cache.  They count in the
        range backlog, so a reader far ahead of the hasher is paused.
        """
        if self._abandoned:
            os.close(fd)
        elif self._queue is None:
            _hashFd(self._digest, fd, length, offset)
        else:
            self._enqueue((fd, offset, length, True), 0, length)

    def _run(self) -> None:
        jobs, callFromThread = self._queue, self._callFromThread
        assert jobs is not None and callFromThread is not None
        error: BaseException | None = None
        buffer: memoryview | None = None
        while (item := jobs.get()) is not None:
            if isinstance(item, tuple):
                fd, offset, length, counted = item
                try:
                    if error is None:
                        if buffer is None:
                            buffer = memoryview(bytearray(_READ_SIZE))
                        _hashFd(self._digest, fd, length, offset, buffer)
                    else:
                        os.close(fd)
                except BaseException as e:  # reported through finish()
                    error = e
                if not counted:
                    continue
                memory, ranges = 0, length
            else:
                memory, ranges = len(item), 0
                if error is None:
                    try:
                        self._digest.update(item)
                    except BaseException as e:
                        error = e
            with self._lock:
                self._pending -= memory
                self._pendingRanges -= ranges
                resume = (
                    self._paused
                    and self._pending <= self.LOW
                    and self._pendingRanges <= self.RANGE_LOW
                )
                if resume:
                    self._paused = False
            if resume:
                callFromThread(self._resumed)
        if error is not None:
            callFromThread(self._finished.errback, error)
        else:
            callFromThread(self._finished.callback, self._digest.hexdigest())

    def _resumed(self) -> None:
        if not self._abandoned:
            self._backlog(False)

    def finish(self) -> Deferred[str]:
        """The hex digest, once everything given so far is hashed."""
        if self._queue is None:
            self._finished.callback(self._digest.hexdigest())
        else:
            self._queue.put(None)
        return self._finished

    def abandon(self) -> None:
        """The digest is not needed: let the worker end (it still closes its files)."""
        if self._abandoned:
            return
        self._abandoned = True
        if self._queue is not None and not self._finished.called:
            self._queue.put(None)
