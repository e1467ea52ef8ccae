"""
The TCP file server: pipelined FETCH/LIST/STAT over one connection, bodies streamed.

A FETCH body is pushed by L{_BodySender}, registered as the transport's streaming
producer: when the socket's send buffer fills (a slow or stalled reader) the transport
pauses it, so a connection never holds more than the transport buffer, one turn of
chunks and L{HASH_BACKLOG} bytes waiting to be hashed, whatever the file size.  The
sha256 trailer is computed (in a worker thread) while the bytes go out; a resumed FETCH
uses the digest cached for that file version, or else also hashes the skipped prefix
(read once, not sent).

On a plain TCP socket, L{_SendfileSender} sends the body with C{os.sendfile}
instead: the bytes go from the page cache to the socket without passing through
Python, which was most of the server's cost on a fast link; without a cached digest
its hasher reads back what was just sent, from the page cache.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat as statModule
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPullProducer,
    IPushProducer,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.connections import ConnectionLimits
from twisted_udpsuite.drain import Drain, IDrainable
from twisted_udpsuite.files.hashing import StreamHasher
from twisted_udpsuite.files.wire import (
    Fetch,
    ListDir,
    MalformedFrame,
    Request,
    RequestParser,
    Status,
    encodeResponseHead,
    encodeTrailer,
)
from twisted_udpsuite.paths import UnsafePath, isTemporaryName, relativeName, safeDescendant
from twisted_udpsuite.reactors import reactorOr

__all__ = ["FileServerFactory", "FileServerProtocol", "RequestCounts", "fileVersion"]

#: Bytes read and written per chunk.  Measured on loopback: bigger chunks (256 KiB,
#: 1 MiB) are slower, as each read and each join in the transport then allocates
#: fresh pages instead of reusing the heap.
CHUNK = 64 * 1024
#: Bytes a TCP transport buffers before pausing the sender (Twisted's per-send size).
SEND_LIMIT = 128 * 1024
#: Bytes a connection may send ahead of its sha256 worker before the sender waits.
HASH_BACKLOG = 1024 * 1024
#: Chunks sent per reactor turn before yielding to other connections.
TURN_CHUNKS = 16
#: Bytes a sendfile body sender sends per reactor turn before yielding.
TURN_BYTES = TURN_CHUNKS * CHUNK
#: Bytes sent with sendfile handed to the hasher at once (read back in one job).
HASH_RANGE = 1024 * 1024
#: sendfile errors that mean "not for this file" (the body is then copied).
_NO_SENDFILE = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
)
#: Requests queued behind the current one before the server stops reading.
MAX_PIPELINE = 32
#: Directory entries per LIST answer (the listing is built in memory).
MAX_LIST = 10000


def fileVersion(st: os.stat_result) -> str:
    """
    The identity of one version of a file: changes when it is rewritten or replaced.

    A hash of device, inode, size, mtime and ctime (ns), so it says nothing about the
    server's inode numbers; 16 hex digits.
    """
    key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return hashlib.blake2b(key.encode("ascii"), digest_size=8).hexdigest()


@dataclass
class RequestCounts:
    """
    What a file server answered, for its metrics (L{twisted_udpsuite.metrics}).

    @ivar requests: answered requests by (status code, outcome); the outcome is C{ok},
        C{error} (a status other than 200), C{changed} (the file changed while sent),
        C{disconnected} (the client went away mid-body), C{failed} (a read error) or
        C{cut} (the server stopped before the body was sent).
    @ivar bytesSent: body bytes sent.
    @ivar refused: connections refused, by limit (C{total}, C{per-host}, C{stopping}).
    @ivar openConnections: how many connections are open now.
    """

    openConnections: Callable[[], int]
    requests: Counter[tuple[int, str]] = field(default_factory=Counter)
    bytesSent: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def answered(self, status: int, outcome: str, sent: int) -> None:
        self.requests[status, outcome] += 1
        self.bytesSent += sent


def outcomeLabel(status: int, outcome: str) -> str:
    """The bounded outcome label of a request's free-text C{outcome} (see L{RequestCounts})."""
    if status != Status.OK:
        return "error"
    if outcome in ("ok", "cut"):
        return outcome
    return {"changed while sent": "changed", "client disconnected": "disconnected"}.get(
        outcome, "failed"
    )


def _kind(mode: int) -> str:
    if statModule.S_ISREG(mode):
        return "file"
    if statModule.S_ISDIR(mode):
        return "dir"
    return "other"


@implementer(IPushProducer)
class _BodySender:
    """
    Streams C{fd} from C{start} to C{size} to the transport, then the trailer.

    Without C{trailer} (the plain protocol, L{twisted_udpsuite.files.plain}) nothing is
    hashed and nothing follows the bytes; a file changed meanwhile is only logged.

    Runs in reactor turns of at most L{TURN_CHUNKS} chunks; the transport pauses it
    when its buffer is full, and so does the hasher if it falls behind.  The sha256
    is computed by a L{StreamHasher} (a worker thread on a real reactor); for a resume
    the skipped prefix is hashed there too, read but not sent.  With a digest cached
    for this version (an earlier complete read) nothing is hashed at all.
    """

    def __init__(
        self,
        protocol: FileServerProtocol,
        fd: int,
        start: int,
        size: int,
        version: str,
        cachedDigest: str | None,
        trailer: bool = True,
    ) -> None:
        self._protocol = protocol
        self._trailer = trailer
        self._fd = fd
        self._size = size
        self._version = version
        self._cached = cachedDigest
        self._position = start
        self.sent = 0
        self._paused = False
        self._hashPaused = False
        self._done = False
        self._gone = False
        self._call: IDelayedCall | None = None
        self._hasher: StreamHasher | None = None
        if cachedDigest is None and trailer:
            self._hasher = StreamHasher(
                protocol.factory.reactor, self._backlog, high=HASH_BACKLOG, low=HASH_BACKLOG // 4
            )
            if start:
                self._hasher.updateFromFile(os.dup(fd), start)

    def start(self) -> None:
        self._protocol.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._done:
            factory = self._protocol.factory
            self._call = factory.reactor.callLater(factory.turnDelay, self._pump)

    def _pump(self) -> None:
        self._call = None
        budget = TURN_CHUNKS
        transport = self._protocol.transport
        while not (self._paused or self._hashPaused or self._done) and budget > 0:
            if self._position >= self._size:
                self._finish()
                return
            try:
                data = os.pread(self._fd, min(CHUNK, self._size - self._position), self._position)
            except OSError as e:
                self._fail(f"read error: {e.strerror}")
                return
            if not data:
                self._fail("file shrank while being sent")
                return
            self._position += len(data)
            if self._hasher is not None:
                self._hasher.update(data)
            self.sent += len(data)
            self._protocol.resetTimeout()
            transport.write(data)
            budget -= 1
        if not (self._paused or self._hashPaused or self._done):
            self._schedule()

    def _backlog(self, behind: bool) -> None:
        self._hashPaused = behind
        if not behind and not self._paused:
            self._schedule()

    def _finish(self) -> None:
        self._done = True
        try:
            changed = fileVersion(os.fstat(self._fd)) != self._version
        except OSError:
            changed = True
        self._close()
        self._protocol.transport.unregisterProducer()
        if not self._trailer:
            self._protocol.bodyDone(self.sent, "changed while sent" if changed else "ok")
            return
        if self._hasher is None:
            self._sendTrailer(changed, self._cached)
            return
        self._hasher.finish().addCallbacks(
            lambda digest: self._sendTrailer(changed, digest),
            lambda failure: self._sendTrailer(True, None),
        )

    def _sendTrailer(self, changed: bool, digest: str | None) -> None:
        if self._gone:
            return
        if changed:
            digest = None
        elif digest is not None:
            self._protocol.factory.rememberDigest(self._version, digest)
        self._protocol.transport.write(encodeTrailer(digest))
        self._protocol.bodyDone(self.sent, "ok" if digest is not None else "changed while sent")

    def _fail(self, why: str) -> None:
        self._done = True
        self._gone = True
        self._close()
        if self._hasher is not None:
            self._hasher.abandon()
        self._protocol.transport.unregisterProducer()
        # The body cannot be completed, so framing is lost: the connection must go.
        self._protocol.bodyDone(self.sent, why, abort=True)

    def _close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def pauseProducing(self) -> None:
        self._paused = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def resumeProducing(self) -> None:
        self._paused = False
        if self._call is None and not self._done and not self._hashPaused:
            # The transport drained its buffer: refill it now rather than a turn later.
            self._pump()

    def stopProducing(self) -> None:
        """The connection is gone (mid-body, or while the digest was finishing)."""
        if self._gone:
            return
        self._gone = True
        self._done = True
        self._close()
        if self._hasher is not None:
            self._hasher.abandon()
        self._protocol.bodyDone(self.sent, "client disconnected", aborted=True)


@implementer(IPullProducer)
class _SendfileSender(_BodySender):
    """
    Streams a body with C{os.sendfile}: file pages go to the socket inside the kernel.

    Used only on a plain TCP socket.  It is registered as a I{pull} producer, because
    then the transport calls L{resumeProducing} exactly when its own write buffer is
    empty (the response head, earlier pipelined answers) and the socket is writable:
    only then may bytes bypass that buffer without reordering the stream.  Each turn
    sends up to L{TURN_BYTES}, until the socket would block; then C{startWriting} waits
    for writability through the reactor, like any buffered write.

    With the version's digest cached nothing is hashed and the body never passes
    through the process.  Without it, the hasher's thread reads back each range just
    sent, from the page cache that sendfile has just filled (at most its range budget,
    64 MiB, behind; the sender waits beyond that): storage is read once per request,
    unless memory pressure evicts a page within that window, and the process copies
    each byte once (to hash it) instead of twice.  A file modified meanwhile changes
    its version, so the trailer says C{changed}, as on the copying path.
    """

    _unhashed = -1

    def start(self) -> None:
        transport = self._protocol.transport
        self._socket = transport.fileno()
        # registerProducer calls resumeProducing at once, while the response head may
        # still be buffered: that first call only arms the writability wait.
        self._armed = False
        transport.registerProducer(self, False)
        self._armed = True

    def resumeProducing(self) -> None:
        transport = self._protocol.transport
        if self._done:
            return
        if not self._armed:
            transport.startWriting()
            return
        if self._hashPaused:
            return
        budget = TURN_BYTES
        while budget > 0:
            if self._position >= self._size:
                self._finish()
                return
            try:
                n = os.sendfile(
                    self._socket, self._fd, self._position, min(budget, self._size - self._position)
                )
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    # The peer is gone; the transport's own read or write reports it.
                    break
                if e.errno in _NO_SENDFILE:
                    self._copyInstead(e)
                else:
                    self._fail(f"sendfile error: {e.strerror}")
                return
            if n == 0:
                self._fail("file shrank while being sent")
                return
            self._position += n
            self.sent += n
            budget -= n
            self._protocol.resetTimeout()
            if self._hasher is not None:
                self._hashSent(n)
                if self._hashPaused:
                    return  # _backlog(False) resumes
        if self._position >= self._size:
            self._finish()
            return
        # Wait until the socket is writable (or, after a full turn, let other
        # connections run): the transport's doWrite finds its buffer empty and calls
        # resumeProducing again.
        transport.startWriting()

    def pauseProducing(self) -> None:
        """Not called for a pull producer."""

    def _hashSent(self, n: int) -> None:
        """C{n} more bytes went out: queue them for hashing in ranges of L{HASH_RANGE}."""
        assert self._hasher is not None
        if self._unhashed < 0:
            self._unhashed = self._position - n
        if self._position - self._unhashed >= HASH_RANGE or self._position >= self._size:
            start, self._unhashed = self._unhashed, -1
            self._hasher.updateFromRange(os.dup(self._fd), start, self._position - start)

    def _backlog(self, behind: bool) -> None:
        self._hashPaused = behind
        if not behind and not self._done:
            # Wait for writability again; doWrite then calls resumeProducing.
            self._protocol.transport.startWriting()

    def _copyInstead(self, error: OSError) -> None:
        """
        This file cannot be sendfile'd (some filesystems refuse): hand the rest of the
        body, and the file, to a copying L{_BodySender} on the same connection.
        """
        self._protocol.log.info(
            "sendfile refused ({error}); copying the body instead", error=error.strerror
        )
        self._done = self._gone = True  # this sender is finished; stopProducing is a no-op
        if self._hasher is not None:
            # The copying sender hashes from scratch: it reads the sent part once more
            # (only on this rare path).
            self._hasher.abandon()
        self._protocol.transport.unregisterProducer()
        sender = _BodySender(
            self._protocol,
            self._fd,
            self._position,
            self._size,
            self._version,
            self._cached,
            self._trailer,
        )
        sender.sent = self.sent
        self._fd = -1
        self._protocol.replaceSender(sender)


def _canSendfile(transport: Any) -> bool:
    """
    Whether C{transport} is a plain TCP socket connection that L{_SendfileSender} can
    write to directly (not TLS, not an in-memory test transport).
    """
    return (
        hasattr(os, "sendfile")
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and transport.connected
    )


def resolveFile(root: FilePath, request: str | bytes) -> FilePath:
    """
    The path a request names below C{root}: L{safeDescendant}'s confinement (raises
    L{UnsafePath}), and an upload in progress (L{isTemporaryName}) is not found, as over
    TFTP and HTTP (C{FileNotFoundError}).
    """
    path = safeDescendant(root, request)
    if isTemporaryName(path.basename()):
        raise FileNotFoundError(errno.ENOENT, "not found")
    return path


def openRegularFile(path: FilePath) -> tuple[int, os.stat_result]:
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


def startBody(
    protocol: Any, fd: int, start: int, st: os.stat_result, cached: str | None, trailer: bool
) -> _BodySender:
    """
    Send the body of the open file C{fd} from C{start} on C{protocol}'s transport, with
    C{sendfile} on a plain TCP socket (see L{_SendfileSender}); the sender owns C{fd}.

    C{protocol} offers C{factory} (C{reactor}, C{turnDelay}, C{sendfile},
    C{rememberDigest}), C{transport}, C{log}, C{resetTimeout()}, C{replaceSender(sender)}
    and C{bodyDone(sent, outcome, abort=False, aborted=False)}.
    """
    sender = _BodySender
    if protocol.factory.sendfile and _canSendfile(protocol.transport):
        sender = _SendfileSender
    body = sender(protocol, fd, start, st.st_size, fileVersion(st), cached, trailer)
    body.start()
    return body


def peerText(transport: Any) -> tuple[str, str]:
    """The peer's address (for limits) and C{host:port} (C{[v6]:port}) for log lines."""
    peer = transport.getPeer()
    host = hostOf(getattr(peer, "host", str(peer)))
    port = getattr(peer, "port", "")
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


@implementer(IHalfCloseableProtocol)
class FileServerProtocol(Protocol):
    """
    One client connection: requests are parsed as they arrive and answered in order.

    A client that half-closes after sending its requests (C{printf ... | nc}) still
    gets every answer; the server closes once the last one is sent.

    Limits: a request line over L{wire.MAX_REQUEST} (413, then close), a request not
    completed within C{headerTimeout} (408, close), no traffic either way for
    C{idleTimeout} (408 if idle, abort if a body is stalled), more than
    L{MAX_PIPELINE} queued requests (stop reading until the queue drains).
    """

    factory: FileServerFactory
    log = Logger(namespace="twisted_udpsuite.files")

    def connectionMade(self) -> None:
        self._parser = RequestParser()
        self._queue: deque[Request] = deque()
        self._current: tuple[Request, float] | None = None
        self._sender: _BodySender | None = None
        self._closing = False
        self._inputDone = False
        self._readPaused = False
        self._idleCall: IDelayedCall | None = None
        self._headerCall: IDelayedCall | None = None
        self._cut = False
        _tuneTransport(self.transport)
        _, self.peer = peerText(self.transport)
        self.resetTimeout()

    # Timers

    def resetTimeout(self) -> None:
        """Traffic happened: restart the idle timer."""
        reactor = self.factory.reactor
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self.factory.idleTimeout)
        elif not self._closing:
            self._idleCall = reactor.callLater(self.factory.idleTimeout, self._idleTimedOut)

    def _idleTimedOut(self) -> None:
        self._idleCall = None
        if self._sender is not None:
            self.log.info("aborting stalled transfer to {peer}", peer=self.peer)
            self.transport.abortConnection()
        else:
            self._fatal(Status.TIMEOUT, "idle timeout")

    def _headerTimedOut(self) -> None:
        self._headerCall = None
        self._fatal(Status.TIMEOUT, "request header timeout")

    def _updateHeaderTimer(self) -> None:
        waiting = self._parser.pending > 0 and self._current is None and not self._queue
        if waiting and self._headerCall is None:
            self._headerCall = self.factory.reactor.callLater(
                self.factory.headerTimeout, self._headerTimedOut
            )
        elif not waiting and self._headerCall is not None:
            self._headerCall.cancel()
            self._headerCall = None

    def _cancelTimers(self) -> None:
        for call in (self._idleCall, self._headerCall):
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._headerCall = None

    # Input

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        try:
            requests = self._parser.feed(data)
        except MalformedFrame as e:
            self._queue.extend(getattr(e, "requests", []))
            self._queue.append(e)  # type: ignore[arg-type]
            requests = []
        self._queue.extend(requests)
        if len(self._queue) > MAX_PIPELINE and not self._readPaused:
            self._readPaused = True
            self.transport.pauseProducing()
        self._next()
        self._updateHeaderTimer()

    def _next(self) -> None:
        if self.factory.stopping and self._current is None and not self._closing:
            self._fatal(Status.BUSY, "server stopping")
            return
        while self._current is None and self._queue and not self._closing:
            request = self._queue.popleft()
            if isinstance(request, MalformedFrame):
                self._fatal(request.status, str(request))
                return
            self._current = (request, self.factory.reactor.seconds())
            self._answer(request)
        if self._readPaused and len(self._queue) <= MAX_PIPELINE // 2:
            self._readPaused = False
            self.transport.resumeProducing()
        if self._inputDone and self._current is None and not self._queue and not self._closing:
            self._closing = True
            self._cancelTimers()
            self.transport.loseConnection()
            return
        self._updateHeaderTimer()

    def readConnectionLost(self) -> None:
        """The client sent all its requests: answer them, then close."""
        self._inputDone = True
        self._next()

    def writeConnectionLost(self) -> None:
        self.transport.abortConnection()

    def _fatal(self, status: int, message: str) -> None:
        """Answer a limit or framing error, then close: the stream cannot be trusted."""
        self.transport.write(encodeResponseHead(status, message))
        self.log.info(
            "closing connection from {peer}: {status} {message}",
            peer=self.peer,
            status=status,
            message=message,
        )
        self._closing = True
        self._queue.clear()
        self._cancelTimers()
        self.transport.loseConnection()

    # Answers

    def _answer(self, request: Request) -> None:
        try:
            path = resolveFile(self.factory.root, request.path)
        except UnsafePath as e:
            self.log.debug("refused {path!r}: {reason}", path=request.path, reason=e.reason)
            self._error(Status.FORBIDDEN, "path refused")
            return
        except OSError as e:
            self._error(*errorStatus(e))
            return
        try:
            if isinstance(request, Fetch):
                self._fetch(request, path)
            elif isinstance(request, ListDir):
                self._list(path)
            else:
                self._stat(path)
        except OSError as e:
            self._error(*errorStatus(e))

    def _error(self, status: int, message: str) -> None:
        self.transport.write(encodeResponseHead(status, message))
        self._requestDone(0, f"{status} {message}", status)

    def _fetch(self, request: Fetch, path: FilePath) -> None:
        fd, st = openRegularFile(path)
        version = fileVersion(st)
        start = request.offset
        if request.version is not None and request.version != version:
            start = 0  # the client's prefix is of another version: restart
        if start > st.st_size:
            os.close(fd)
            self._error(Status.BAD_OFFSET, f"offset beyond end of file ({st.st_size})")
            return
        cached = self.factory.digestFor(version)
        self.transport.write(
            encodeResponseHead(
                Status.OK,
                "OK",
                size=st.st_size - start,
                offset=start,
                version=version,
                kind="file",
                mtime=st.st_mtime_ns,
            )
        )
        self._sender = startBody(self, fd, start, st, cached, trailer=True)

    def replaceSender(self, sender: _BodySender) -> None:
        """Continue the current body with C{sender} (the sendfile path gave up)."""
        self._sender = sender
        sender.start()

    def bodyDone(self, sent: int, outcome: str, abort: bool = False, aborted: bool = False) -> None:
        """The body sender finished (or failed, or the client went away)."""
        self._sender = None
        self._requestDone(sent, outcome)
        if abort:
            self._closing = True
            self.transport.abortConnection()
        elif not aborted:
            self._next()

    def _list(self, path: FilePath) -> None:
        entries = []
        truncated = False
        with os.scandir(path.path) as it:
            for entry in it:
                if isTemporaryName(entry.name):
                    continue
                if len(entries) >= MAX_LIST:
                    truncated = True
                    break
                try:
                    st = entry.stat()
                    kind = _kind(st.st_mode)
                    if not _isSafeEntry(self.factory.root, path, entry.name):
                        continue
                except OSError:
                    continue
                entries.append(
                    {"name": entry.name, "kind": kind, "size": st.st_size, "mtime": st.st_mtime_ns}
                )
        entries.sort(key=lambda e: e["name"])
        body = b"".join(
            json.dumps(e, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
            for e in entries
        )
        self.transport.write(
            encodeResponseHead(
                Status.OK,
                "OK",
                size=len(body),
                kind="dir",
                entries=len(entries),
                truncated=int(truncated),
            )
        )
        self.transport.write(body)
        self._requestDone(len(body), "ok")

    def _stat(self, path: FilePath) -> None:
        st = os.stat(path.path)
        fields: dict[str, Any] = {"kind": _kind(st.st_mode), "mtime": st.st_mtime_ns}
        if statModule.S_ISREG(st.st_mode):
            fields["length"] = st.st_size
            fields["version"] = fileVersion(st)
        self.transport.write(encodeResponseHead(Status.OK, "OK", **fields))
        self._requestDone(0, "ok")

    def _requestDone(self, sent: int, outcome: str, status: int = Status.OK) -> None:
        assert self._current is not None
        request, started = self._current
        self._current = None
        if self._cut:
            outcome = "cut"
        verb = type(request).__name__.upper().replace("LISTDIR", "LIST")
        self.factory.requestDone(
            verb,
            request.path,
            self.peer,
            outcome,
            sent,
            started,
            status,
            offset=getattr(request, "offset", 0),
        )

    # Stopping (see FileServerFactory.drain)

    def drain(self) -> None:
        """The server is stopping: close now if idle, else once the current answer is sent."""
        self._next()

    def cut(self) -> None:
        """The drain time is over: drop the connection, logging its body as C{cut}."""
        self._cut = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancelTimers()
        if self._sender is not None:
            self._sender.stopProducing()
        self.factory.connectionClosed(self)


def _tuneTransport(transport: Any) -> None:
    """
    Pause the sender at Twisted's send size (128 KiB) rather than its 64 KiB read size:
    one chunk more in flight per connection, half the pause/resume round trips.
    """
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = SEND_LIMIT


def _isSafeEntry(root: FilePath, directory: FilePath, name: str) -> bool:
    """Hide entries (symlinks) that lead out of the root: they could not be fetched."""
    try:
        relativeName(root, directory.child(name))
    except ValueError:
        return False
    return True


class _Refuser(Protocol):
    """Answers a connection over a limit with its status, then closes."""

    def __init__(self, status: int, message: str) -> None:
        self._status = status
        self._message = message

    def connectionMade(self) -> None:
        self.transport.write(encodeResponseHead(self._status, self._message))
        self.transport.loseConnection()


@implementer(IDrainable)
class FileServerFactory(Factory):
    """
    Serves the files below C{root} to L{FileServerProtocol}s, within limits.

    @param root: the directory served; requests are confined to it by
        L{twisted_udpsuite.paths.safeDescendant}.
    @param reactor: timers and scheduling (L{None}: the global reactor).
    @param maxConnections: open connections in total (more get 503).
    @param maxPerHost: open connections per client address (more get 429).
    @param idleTimeout: seconds without traffic before a connection is closed.
    @param headerTimeout: seconds to complete a request line once it is started.
    @param digestCache: file versions whose sha256 is remembered (for resumes).
    @param turnDelay: seconds between two turns of a body sender (0: the next reactor
        iteration); a test clock uses a small value to see a body arrive in steps.
    @param sendfile: send bodies whose digest is cached with C{os.sendfile} when the
        transport is a plain TCP socket (L{False}: always copy through Python).
    """

    protocol = FileServerProtocol
    log = Logger(namespace="twisted_udpsuite.files")
    noisy = False

    def __init__(
        self,
        root: FilePath,
        reactor: Any = None,
        maxConnections: int = 256,
        maxPerHost: int = 16,
        idleTimeout: float = 120.0,
        headerTimeout: float = 10.0,
        digestCache: int = 1024,
        turnDelay: float = 0.0,
        sendfile: bool = True,
    ) -> None:
        self.turnDelay = turnDelay
        self.sendfile = sendfile
        self.root = root
        self.reactor = reactorOr(reactor)
        self.limits = ConnectionLimits(maxConnections, maxPerHost)
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
        self._digests: OrderedDict[str, str] = OrderedDict()
        self._digestCache = digestCache
        self.requestsServed = 0
        self.bytesSent = 0
        self.counts = RequestCounts(self.limits.open.total)
        self.protocols: set[FileServerProtocol] = set()
        self._drain = Drain(self.reactor, self._cutRemaining)

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        host = hostOf(getattr(addr, "host", str(addr)))
        refusal = "stopping" if self._drain.stopping else self.limits.refusal(host)
        if refusal is not None:
            self.counts.refused[refusal] += 1
        if refusal == "stopping":
            return self.refuse(Status.BUSY, "server stopping")
        if refusal == "total":
            self.log.warn("refused connection from {peer}: server full", peer=host)
            return self.refuse(Status.BUSY, "server busy")
        if refusal == "per-host":
            self.log.warn("refused connection from {peer}: per-host limit", peer=host)
            return self.refuse(Status.TOO_MANY_FROM_YOU, "too many connections from your address")
        self.limits.opened(host)
        proto = super().buildProtocol(addr)
        assert proto is not None
        proto.peerHost = host  # type: ignore[attr-defined]
        self.protocols.add(proto)  # type: ignore[arg-type]
        return proto

    def refuse(self, status: int, message: str) -> Protocol | None:
        """What answers a connection over a limit: its status line, then close."""
        return _Refuser(status, message)

    def requestDone(
        self,
        verb: str,
        path: str,
        peer: str,
        outcome: str,
        sent: int,
        started: float,
        status: int,
        **fields: Any,
    ) -> None:
        """Log a finished request (one event, the stable fields) and count it."""
        self.log.info(
            "{verb} {path!r} from {peer}: {outcome}, {bytes} bytes in {duration:.3f}s",
            verb=verb,
            path=path,
            peer=peer,
            outcome=outcome,
            bytes=sent,
            duration=self.reactor.seconds() - started,
            service="files",
            file=path,
            status=status,
            filesRequest=True,
            **fields,
        )
        self.requestsServed += 1
        self.bytesSent += sent
        self.counts.answered(status, outcomeLabel(status, outcome), sent)

    def connectionClosed(self, proto: FileServerProtocol) -> None:
        self.limits.closed(proto.peerHost)  # type: ignore[attr-defined]
        self.protocols.discard(proto)
        self._drain.check(not self.protocols)

    @property
    def stopping(self) -> bool:
        """Whether L{drain} has begun: new connections and requests are refused."""
        return self._drain.stopping

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Stop without cutting transfers: refuse new connections (503 "server stopping")
        and new requests on open ones, let the answers being sent finish for up to
        C{timeout} seconds, then drop the connections left (their bodies log C{cut}).

        @return: fires once no connection is left.
        """
        d = self._drain.begin(timeout, not self.protocols)
        for proto in list(self.protocols):
            proto.drain()
        return d

    def _cutRemaining(self) -> None:
        for proto in list(self.protocols):
            self.log.warn("drain time over: cutting the connection from {peer}", peer=proto.peer)
            proto.cut()

    def digestFor(self, version: str) -> str | None:
        """The cached sha256 of a file version, if it was read whole before."""
        digest = self._digests.get(version)
        if digest is not None:
            self._digests.move_to_end(version)
        return digest

    def rememberDigest(self, version: str, digest: str) -> None:
        self._digests[version] = digest
        self._digests.move_to_end(version)
        while len(self._digests) > self._digestCache:
            self._digests.popitem(last=False)
