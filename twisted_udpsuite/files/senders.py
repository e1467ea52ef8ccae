"""
The file server's body senders: a FETCH body (or a plain answer) streamed from an open
file to the connection, the sha256 computed on the way.

L{BodySender} is registered as the transport's streaming producer: when the socket's
send buffer fills (a slow or stalled reader) the transport pauses it, so a connection
never holds more than the transport buffer, one turn of chunks and L{HASH_BACKLOG}
bytes waiting to be hashed, whatever the file size.  The sha256 trailer is computed (in
a worker thread) while the bytes go out; a resumed FETCH uses the digest cached for
that file version, or else also hashes the skipped prefix (read once, not sent).

On a plain TCP socket, L{SendfileSender} sends the body with C{os.sendfile}
instead: the bytes go from the page cache to the socket without passing through
Python, which was most of the server's cost on a fast link; without a cached digest
its hasher reads back what was just sent, from the page cache.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPullProducer, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_udpsuite.connections import IConnectionTransport
from twisted_udpsuite.files.hashing import StreamHasher
from twisted_udpsuite.files.served import fileVersion
from twisted_udpsuite.files.wire import encodeTrailer

__all__ = [
    "BodyOwner",
    "SenderSettings",
    "BodySender",
    "SendfileSender",
    "canSendfile",
    "startBody",
    "tuneTransport",
]

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


class SenderSettings(Protocol):
    """What a body sender asks of its server factory."""

    #: Seconds between two turns of a sender.
    turnDelay: float
    #: Whether a body may go out with C{os.sendfile}.
    sendfile: bool

    @property
    def reactor(self) -> IReactorTime:
        """Turns are scheduled, and the hasher runs, on this reactor."""

    def rememberDigest(self, version: str, digest: str) -> None:
        """Keep the sha256 of a file version read whole."""


class _SocketConnection(Protocol):
    """What L{SendfileSender} uses of a C{twisted.internet.tcp.Connection} (untyped there)."""

    def fileno(self) -> int:
        """The socket."""

    def registerProducer(self, producer: IPullProducer, streaming: bool) -> None:
        """Call C{producer} when the write buffer is empty and the socket writable."""

    def startWriting(self) -> None:
        """Wait for the socket to be writable."""


class BodyOwner(Protocol):
    """The protocol a body sender sends for (L{twisted_udpsuite.files.server}, plain)."""

    transport: IConnectionTransport
    log: Logger

    @property
    def factory(self) -> SenderSettings:
        """The server factory."""

    def resetTimeout(self) -> None:
        """Bytes went out: the connection is not idle."""

    def replaceSender(self, sender: BodySender) -> None:
        """Continue the current body with C{sender} (the sendfile path gave up)."""

    def bodyDone(self, sent: int, outcome: str, abort: bool = False, aborted: bool = False) -> None:
        """The body is sent, or failed (C{abort}: close), or the client went away."""


@implementer(IPushProducer)
class BodySender:
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
        protocol: BodyOwner,
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
class SendfileSender(BodySender):
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

    @property
    def _connection(self) -> _SocketConnection:
        """The plain TCP socket connection (L{canSendfile} chose this sender for it)."""
        return cast(_SocketConnection, self._protocol.transport)

    def start(self) -> None:
        transport = self._connection
        self._socket = transport.fileno()
        # registerProducer calls resumeProducing at once, while the response head may
        # still be buffered: that first call only arms the writability wait.
        self._armed = False
        transport.registerProducer(self, False)
        self._armed = True

    def resumeProducing(self) -> None:
        transport = self._connection
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
            self._connection.startWriting()

    def _copyInstead(self, error: OSError) -> None:
        """
        This file cannot be sendfile'd (some filesystems refuse): hand the rest of the
        body, and the file, to a copying L{BodySender} on the same connection.
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
        sender = BodySender(
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


def canSendfile(transport: object) -> bool:
    """
    Whether C{transport} is a plain TCP socket connection that L{SendfileSender} can
    write to directly (not TLS, not an in-memory test transport).
    """
    return (
        hasattr(os, "sendfile")
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and bool(transport.connected)
    )


def startBody(
    protocol: BodyOwner, fd: int, start: int, st: os.stat_result, cached: str | None, trailer: bool
) -> BodySender:
    """
    Send the body of the open file C{fd} from C{start} on C{protocol}'s transport, with
    C{sendfile} on a plain TCP socket (see L{SendfileSender}); the sender owns C{fd}.
    """
    sender: type[BodySender] = BodySender
    if protocol.factory.sendfile and canSendfile(protocol.transport):
        sender = SendfileSender
    body = sender(protocol, fd, start, st.st_size, fileVersion(st), cached, trailer)
    body.start()
    return body


def tuneTransport(transport: object) -> None:
    """
    Pause the sender at Twisted's send size (128 KiB) rather than its 64 KiB read size:
    one chunk more in flight per connection, half the pause/resume round trips.
    """
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = SEND_LIMIT
