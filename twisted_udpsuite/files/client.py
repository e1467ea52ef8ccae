"""
The file server's client: a pipelining protocol and C{fetch}/C{listDirectory}/C{stat}.

L{fetch} downloads into C{LOCAL.part} next to the destination, with a sidecar
C{LOCAL.part.json} recording the remote path and file version.  On success it checks
the size and the sha256 of the whole file and renames the part over C{LOCAL}.  On a
lost connection or a cancel the part and sidecar stay, and the next L{fetch} of the same
remote path resumes from them if the server still has the same version (else it
restarts from 0: the server decides, from the version the client sends).  A digest
mismatch or a refused request removes them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from twisted_udpsuite.files.hashing import StreamHasher
from twisted_udpsuite.files.wire import (
    BodyData,
    Fetch,
    ListDir,
    MalformedFrame,
    Request,
    ResponseEnd,
    ResponseEvent,
    ResponseHead,
    ResponseParser,
    Stat,
    Status,
    Trailer,
    encodeRequest,
)
from twisted_udpsuite.reactors import reactorOr

try:
    import fcntl
except ImportError:  # not POSIX: no splice path either
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DigestMismatch",
    "DirectoryEntry",
    "FetchError",
    "FetchResult",
    "FileChanged",
    "FileClientProtocol",
    "InsufficientSpace",
    "ServerError",
    "StatResult",
    "TransferInterrupted",
    "fetch",
    "fetchTo",
    "listDirectory",
    "stat",
]

PART_SUFFIX = ".part"
#: Bytes asked of the socket per read.
RECV_SIZE = 256 * 1024
#: Bodies with at least this many bytes left are spliced (see L{FileClientProtocol}).
SPLICE_MIN = 1024 * 1024
#: Pipe size asked for splicing (1 MiB: the unprivileged maximum by default).
SPLICE_SIZE = 1024 * 1024
#: Spliced bytes handed to the hasher at once (read back in one job).
HASH_RANGE = 1024 * 1024
#: Bytes spliced per reactor turn before other events get a chance.
SPLICE_TURN = 8 * 1024 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: splice errors that mean "not between these two" (the bytes are then copied).
_NO_SPLICE = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
)
SIDECAR_SUFFIX = ".part.json"
#: How every answer starts, as far as its first 4 bytes go (C{200 }).
_STATUS_START = re.compile(rb"[0-9]{0,3}|[0-9]{3} ")


class FetchError(Exception):
    """A download or query failed; the message is fit for a user."""


class ServerError(FetchError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server said {status} {message}")
        self.status = status
        self.serverMessage = message


class DigestMismatch(FetchError):
    """The bytes received do not hash to the server's sha256 (the part is removed)."""


class FileChanged(FetchError):
    """The file changed on the server while it was sent; fetch again."""


class TransferInterrupted(FetchError):
    """The connection was lost mid-body; the partial file is kept for a resume."""


class InsufficientSpace(FetchError):
    """
    The destination's filesystem has no room for the bytes still to come: found from
    the answer's head, before anything is written (a part file is kept as it was).
    """


@dataclass(frozen=True)
class FetchResult:
    """
    A finished download.

    @ivar size: the file's size; @ivar received: bytes that came over the wire
    (less than C{size} after a resume); @ivar resumedFrom: the offset it resumed at;
    @ivar path: where it was saved (None for L{fetchTo}).
    """

    path: FilePath | None
    size: int
    received: int
    resumedFrom: int
    sha256: str
    version: str
    duration: float


@dataclass(frozen=True)
class DirectoryEntry:
    """One LIST entry."""

    name: str
    kind: str
    size: int
    mtime: int


@dataclass(frozen=True)
class StatResult:
    """A STAT answer; C{size} and C{version} only for files."""

    kind: str
    mtime: int
    size: int | None
    version: str | None


class _Sink:
    """Receives one response's events; the base collects a small body in memory."""

    def __init__(self, limit: int = 64 * 1024 * 1024) -> None:
        self.deferred: Deferred[Any] = Deferred()
        self.head: ResponseHead | None = None
        self._chunks: list[bytes] = []
        self._limit = limit
        self._size = 0

    def onHead(self, head: ResponseHead) -> None:
        self.head = head
        if head.size > self._limit:
            raise MalformedFrame("answer too large")

    def onData(self, data: bytes) -> None:
        self._chunks.append(data)

    def onEnd(self, trailer: Trailer | None) -> None:
        self.deferred.callback((self.head, b"".join(self._chunks)))

    def onLost(self, reason: Failure) -> None:
        self.deferred.errback(reason)

    def canSplice(self) -> bool:
        """Whether body bytes may bypass L{onData} (L{onSpliced}): only file sinks."""
        return False

    def onSpliced(self, pipe: int, length: int) -> None:
        """C{length} body bytes are waiting in C{pipe}: take them all."""
        raise NotImplementedError


class FileClientProtocol(Protocol):
    """
    Sends requests (pipelined) and routes each response to its sink, in order.

    @ivar ready: fires with the protocol once the connection is made.
    """

    log = Logger(namespace="twisted_udpsuite.files")

    def __init__(self, reactor: Any, idleTimeout: float = 60.0) -> None:
        self._reactor = reactor
        self._idleTimeout = idleTimeout
        self._parser = ResponseParser()
        self._sinks: list[_Sink] = []
        self._idleCall: IDelayedCall | None = None
        self.ready: Deferred[FileClientProtocol] = Deferred()
        self.lostReason: Failure | None = None
        self._splicing = False
        self._noSplice = False
        self._pipe: tuple[int, int] | None = None
        self._pipeSize = 0
        self._opening: bytes | None = b""

    def connectionMade(self) -> None:
        if hasattr(self.transport, "bufferSize"):
            # Twisted reads 64 KiB per recv by default; fewer, bigger reads cost less.
            self.transport.bufferSize = RECV_SIZE
        self._touch()
        self.ready.callback(self)

    def _touch(self) -> None:
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self._idleTimeout)
        else:
            self._idleCall = self._reactor.callLater(self._idleTimeout, self._timedOut)

    def _timedOut(self) -> None:
        self._idleCall = None
        self.lostReason = Failure(FetchError(f"no data from the server for {self._idleTimeout}s"))
        self.transport.abortConnection()

    def request(self, request: Request, sink: _Sink) -> Deferred[Any]:
        """Send C{request}; C{sink} gets its response (its C{deferred} fires at the end)."""
        self._parser.expect(isinstance(request, Fetch))
        self._sinks.append(sink)
        self.transport.write(encodeRequest(request))
        return sink.deferred

    def dataReceived(self, data: bytes) -> None:
        self._touch()
        if self._opening is not None and not self._checkOpening(data):
            return
        try:
            self._dispatch(self._parser.feed(data))
            self._maybeSplice()
        except MalformedFrame as e:
            self.lostReason = Failure(FetchError(f"bad answer from the server: {e}"))
            self.transport.abortConnection()
        except Exception:
            self.lostReason = Failure()
            self.transport.abortConnection()

    def _checkOpening(self, data: bytes) -> bool:
        """
        Every answer starts with a status (C{200 }): anything else is another service
        (an echo server sends our own request back), refused at once, not after the
        idle timeout.
        """
        assert self._opening is not None
        self._opening += data[: 4 - len(self._opening)]
        if _STATUS_START.fullmatch(self._opening) is None:
            shown = (self._opening + data[4 - len(self._opening) :])[:24]
            self.lostReason = Failure(
                FetchError(f"not a udpsuite file server: it answered {shown!r}")
            )
            self._opening = None
            self.transport.abortConnection()
            return False
        if len(self._opening) == 4:
            self._opening = None
        return True

    def _dispatch(self, events: list[ResponseEvent]) -> None:
        for event in events:
            sink = self._sinks[0]
            if isinstance(event, ResponseHead):
                sink.onHead(event)
            elif isinstance(event, BodyData):
                sink.onData(event.data)
            elif isinstance(event, ResponseEnd):
                self._sinks.pop(0)
                sink.onEnd(event.trailer)

    # The splice path: a big FETCH body goes socket -> pipe -> file in the kernel.

    def _maybeSplice(self) -> None:
        """
        Read the rest of the current body with C{os.splice} if its sink can take it.

        Twisted reads into fresh Python bytes, which the sink then writes out again:
        two copies and a Python call per chunk, the client's main cost on a fast link.
        Spliced bytes are copied once, socket to file, and hashed by reading them back
        from the page cache in the hasher's thread.  Only for a plain TCP socket (not
        in-memory transports), and only for the body: the reader is put back for the
        trailer, so the framing stays with L{ResponseParser}.
        """
        if (
            self._splicing
            or self._noSplice
            or self._parser.bodyRemaining < SPLICE_MIN
            or not self._sinks
            or not self._sinks[0].canSplice()
            or not _canSplice(self.transport)
        ):
            return
        if self._pipe is None:
            self._pipe = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                fcntl.fcntl(self._pipe[1], fcntl.F_SETPIPE_SZ, SPLICE_SIZE)
            except OSError:
                pass  # a smaller pipe (the default 64 KiB) only means more calls
            self._pipeSize = fcntl.fcntl(self._pipe[1], fcntl.F_GETPIPE_SZ)
        self._splicing = True
        # The reactor calls transport.doRead when the socket is readable; Twisted's
        # own abortConnection replaces it the same way.
        self.transport.doRead = self._spliceRead

    def _stopSplice(self) -> None:
        self._splicing = False
        if self.transport.__dict__.get("doRead") == self._spliceRead:
            del self.transport.doRead

    def _spliceRead(self) -> Any:
        """The transport's C{doRead} while splicing: returns what C{doRead} would."""
        assert self._pipe is not None
        pipeRead, pipeWrite = self._pipe
        socket = self.transport.fileno()
        budget = SPLICE_TURN
        while budget > 0 and self._splicing:
            want = min(self._parser.bodyRemaining, self._pipeSize)
            try:
                n = os.splice(socket, pipeWrite, want, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _NO_SPLICE:
                    # Read the ordinary way (the socket stays readable, so the reactor
                    # calls Twisted's doRead next).
                    self._noSplice = True
                    self._stopSplice()
                    return None
                return main.CONNECTION_LOST
            if n == 0:
                return main.CONNECTION_DONE
            self._touch()
            try:
                sink = self._sinks[0]
                sink.onSpliced(pipeRead, n)
                events = self._parser.bodyTaken(n)
                if not self._parser.bodyRemaining or not sink.canSplice():
                    self._stopSplice()
                self._dispatch(events)
            except Exception:
                self.lostReason = Failure()
                self._stopSplice()
                self.transport.abortConnection()
                return None
            budget -= n
        return None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._splicing = False
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        failure = self.lostReason or reason
        if failure.check(ConnectionDone, ConnectionLost):
            failure = Failure(TransferInterrupted("the connection was lost"))
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.onLost(failure)


def _canSplice(transport: Any) -> bool:
    """Whether C{transport} is a plain TCP socket that C{os.splice} can read from."""
    return (
        hasattr(os, "splice")
        and fcntl is not None
        and hasattr(fcntl, "F_SETPIPE_SZ")
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and transport.connected
    )


def freeSpace(directory: str) -> int | None:
    """Bytes an unprivileged writer may still use in C{directory}'s filesystem."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows), or an odd filesystem
        return None
    return st.f_bavail * st.f_frsize


class _Factory(ClientFactory):
    """Hands the one prepared protocol to the connection; reports a failed connect."""

    noisy = False

    def __init__(self, protocol: FileClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> FileClientProtocol:
        return self._protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self._protocol.ready.called:
            self._protocol.ready.errback(reason)


async def _connect(
    reactor: Any, address: tuple[str, int], timeout: float, idleTimeout: float
) -> FileClientProtocol:
    protocol = FileClientProtocol(reactor, idleTimeout)
    connector = reactor.connectTCP(address[0], address[1], _Factory(protocol), timeout=timeout)

    def cancel(d: Deferred[Any]) -> None:
        connector.disconnect()

    waiting: Deferred[FileClientProtocol] = Deferred(cancel)
    protocol.ready.chainDeferred(waiting)
    try:
        return await waiting
    except CancelledError:
        raise
    except FetchError:
        raise
    except Exception as e:
        raise FetchError(f"cannot connect to {address[0]}:{address[1]}: {e}") from None


def _check(head: ResponseHead | None) -> ResponseHead:
    assert head is not None
    if not head.ok:
        raise ServerError(head.status, head.message)
    return head


def _query(
    reactor: Any,
    address: tuple[str, int],
    request: Request,
    timeout: float,
) -> Deferred[tuple[ResponseHead, bytes]]:
    """One request on its own connection; cancelling closes it."""

    async def go() -> tuple[ResponseHead, bytes]:
        protocol = await _connect(reactor, address, timeout, timeout)
        try:
            head, body = await protocol.request(request, _Sink())
        except BaseException:
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        return _check(head), body

    return Deferred.fromCoroutine(go())


def listDirectory(
    reactor: Any, address: tuple[str, int], path: str = "", *, timeout: float = 30.0
) -> Deferred[list[DirectoryEntry]]:
    """The entries of directory C{path} on the server (sorted by name)."""

    def parse(result: tuple[ResponseHead, bytes]) -> list[DirectoryEntry]:
        head, body = result
        entries = []
        for line in body.splitlines():
            try:
                item = json.loads(line)
                entries.append(
                    DirectoryEntry(
                        str(item["name"]), str(item["kind"]), int(item["size"]), int(item["mtime"])
                    )
                )
            except (ValueError, KeyError, TypeError):
                raise FetchError("bad listing from the server") from None
        return entries

    return _query(reactor, address, ListDir(path), timeout).addCallback(parse)


def stat(
    reactor: Any, address: tuple[str, int], path: str, *, timeout: float = 30.0
) -> Deferred[StatResult]:
    """Kind, mtime and (for a file) size and version of C{path} on the server."""

    def parse(result: tuple[ResponseHead, bytes]) -> StatResult:
        head, _ = result
        fields = head.fields
        length = fields.get("length")
        return StatResult(
            fields.get("kind", "other"),
            int(fields.get("mtime", "0")),
            int(length) if length is not None and length.isdigit() else None,
            fields.get("version"),
        )

    return _query(reactor, address, Stat(path), timeout).addCallback(parse)


class _PartFile:
    """C{LOCAL.part} and its sidecar: what a resume needs to know."""

    def __init__(self, destination: FilePath, remote: str) -> None:
        self.path = destination.siblingExtension(PART_SUFFIX).path
        self.sidecar = destination.siblingExtension(SIDECAR_SUFFIX).path
        self.remote = remote

    def resumable(self) -> tuple[int, str | None]:
        """(bytes held, version) of a part of this same remote file, else (0, None)."""
        try:
            with open(self.sidecar) as f:
                meta = json.load(f)
            size = os.path.getsize(self.path)
        except (OSError, ValueError):
            return 0, None
        if not isinstance(meta, dict) or meta.get("remote") != self.remote:
            return 0, None
        version = meta.get("version")
        if not isinstance(version, str) or size > int(meta.get("size", -1)):
            return 0, None
        return size, version

    def writeSidecar(self, version: str, size: int) -> None:
        tmp = self.sidecar + ".new"
        with open(tmp, "w") as f:
            json.dump({"remote": self.remote, "version": version, "size": size}, f)
        os.replace(tmp, self.sidecar)

    def remove(self) -> None:
        for name in (self.path, self.sidecar):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


class _FetchSink(_Sink):
    """Writes a FETCH body to the part file as it arrives, hashing it."""

    def __init__(
        self,
        part: _PartFile,
        held: int,
        progress: Callable[[int, int | None], None] | None,
    ) -> None:
        super().__init__()
        self.part = part
        self.held = held
        self.progress = progress
        self.fd = -1
        self.hasher: StreamHasher | None = None
        self.reactor: Any = None
        self.transport: Any = None
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
        free = freeSpace(directory)
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
            if e.errno not in _NO_SPLICE:
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
        if self.transport is not None and self.transport.connected:
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


def fetch(
    reactor: Any,
    address: tuple[str, int],
    remote: str,
    destination: FilePath,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
    retryChanged: int = 1,
) -> Deferred[FetchResult]:
    """
    Download C{remote} to C{destination} (published by rename only when verified).

    Resumes from C{destination.part} when its sidecar names the same remote file; the
    server restarts from 0 if the file's version changed.  Cancelling the Deferred
    closes the connection and keeps the part for a later resume.  Fails with
    L{ServerError} (part removed), L{DigestMismatch} (part removed), L{FileChanged}
    (part removed, after C{retryChanged} fresh attempts also saw the file change),
    L{InsufficientSpace} (part kept), L{TransferInterrupted} (part kept) or
    L{FetchError}.

    @param progress: called with (bytes of the file held so far, file size).
    @param retryChanged: how many times to fetch again, from 0, when the server says
        the file changed while it was sent (a file being replaced is usually complete
        a moment later; a file rewritten all the time is not worth chasing).
    """
    reactor = reactorOr(reactor)
    destination = destination.asTextMode()
    part = _PartFile(destination, remote)
    started = reactor.seconds()
    state: dict[str, Any] = {}

    async def go() -> FetchResult:
        for attempt in range(retryChanged + 1):
            try:
                return await once()
            except FileChanged:
                if attempt == retryChanged:
                    raise
                FileClientProtocol.log.info(
                    "{remote} changed while it was sent: fetching it again", remote=remote
                )
        raise AssertionError("not reached")

    async def once() -> FetchResult:
        held, version = part.resumable()
        if version is None:
            held = 0
        protocol = await _connect(reactor, address, timeout, idleTimeout)
        state["protocol"] = protocol
        sink = _FetchSink(part, held, progress)
        sink.reactor = reactor
        sink.transport = protocol.transport
        try:
            head = await protocol.request(Fetch(remote, held, version), sink)
        except BaseException:
            sink.close()
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        try:
            if not head.ok:
                if head.status in (Status.NOT_FOUND, Status.FORBIDDEN, Status.CONFLICT):
                    part.remove()
                raise ServerError(head.status, head.message)
            trailer = sink.trailer
            assert trailer is not None
            if trailer.changed:
                sink.close()
                part.remove()
                raise FileChanged(f"{remote} changed on the server while it was sent")
            if sink.written != sink.total:
                raise FetchError("size mismatch")
            assert sink.hasher is not None
            digest = await sink.hasher.finish()
            if digest != trailer.sha256:
                sink.close()
                part.remove()
                raise DigestMismatch(f"sha256 mismatch: got {digest}, server says {trailer.sha256}")
            os.fsync(sink.fd)
            sink.close()
            os.replace(part.path, destination.path)
            try:
                os.unlink(part.sidecar)
            except FileNotFoundError:
                pass
        finally:
            sink.close()
        return FetchResult(
            destination,
            sink.total,
            sink.received,
            head.offset,
            digest,
            head.version or "",
            reactor.seconds() - started,
        )

    inner = Deferred.fromCoroutine(go())

    def cancel(d: Deferred[FetchResult]) -> None:
        protocol = state.get("protocol")
        if protocol is not None:
            protocol.transport.abortConnection()
        inner.cancel()

    outer: Deferred[FetchResult] = Deferred(cancel)

    def translate(result: Any) -> Any:
        if isinstance(result, Failure) and result.check(OSError):
            e = result.value
            if e.errno == errno.ENOSPC:
                return Failure(FetchError("no space left on the device; the part file is kept"))
        return result

    inner.addBoth(translate).chainDeferred(outer)
    return outer


class _StreamSink(_Sink):
    """Passes a FETCH body on to a writer as it arrives, hashing it (no part file)."""

    def __init__(self, output: Any, progress: Callable[[int, int | None], None] | None) -> None:
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


def fetchTo(
    reactor: Any,
    address: tuple[str, int],
    remote: str,
    output: Any,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
) -> Deferred[FetchResult]:
    """
    Stream C{remote} into C{output} (anything with C{write(bytes)}, e.g. standard
    output) as it arrives: no part file and no resume.  The sha256 is checked at the
    end, so a L{DigestMismatch} or L{FileChanged} says the bytes already written are
    not the file.  Cancelling the Deferred closes the connection.
    """
    reactor = reactorOr(reactor)
    started = reactor.seconds()

    async def go() -> FetchResult:
        protocol = await _connect(reactor, address, timeout, idleTimeout)
        sink = _StreamSink(output, progress)
        try:
            head = await protocol.request(Fetch(remote, 0, None), sink)
        except BaseException:
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        _check(head)
        trailer = sink.trailer
        assert trailer is not None
        if trailer.changed:
            raise FileChanged(f"{remote} changed on the server while it was sent")
        if sink.received != sink.total:
            raise FetchError("size mismatch")
        digest = sink.hasher.hexdigest()
        if digest != trailer.sha256:
            raise DigestMismatch(f"sha256 mismatch: got {digest}, server says {trailer.sha256}")
        return FetchResult(
            None,
            sink.total,
            sink.received,
            0,
            digest,
            head.version or "",
            reactor.seconds() - started,
        )

    return Deferred.fromCoroutine(go())
