"""
The file server's client protocol: requests pipelined on one connection, each
response routed to its sink, and the connect.

A big FETCH body is read with C{os.splice} where the sink can take it (see
L{FileClientProtocol._maybeSplice}): socket to pipe to file inside the kernel.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_udpsuite.connections import IConnectionTransport, IdleTimeout
from twisted_udpsuite.files.errors import FetchError, TransferInterrupted
from twisted_udpsuite.files.wire import (
    BodyData,
    Fetch,
    MalformedFrame,
    Request,
    ResponseEnd,
    ResponseEvent,
    ResponseHead,
    ResponseParser,
    Trailer,
    encodeRequest,
)
from twisted_udpsuite.reactors import IReactorTCPTime
from twisted_udpsuite.twistedprivate import overrideDoRead, restoreDoRead

try:
    import fcntl
except ImportError:  # not POSIX: no splice path either
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileClientProtocol", "ResponseSink", "canSplice", "clientEndpoint", "connect"]

#: Bytes asked of the socket per read.
RECV_SIZE = 256 * 1024
#: Bodies with at least this many bytes left are spliced (see L{FileClientProtocol}).
SPLICE_MIN = 1024 * 1024
#: Pipe size asked for splicing (1 MiB: the unprivileged maximum by default).
SPLICE_SIZE = 1024 * 1024
#: Bytes spliced per reactor turn before other events get a chance.
SPLICE_TURN = 8 * 1024 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: splice errors that mean "not between these two" (the bytes are then copied).
NO_SPLICE = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
)
#: How every answer starts, as far as its first 4 bytes go (C{200 }).
_STATUS_START = re.compile(rb"[0-9]{0,3}|[0-9]{3} ")


class ResponseSink:
    """
    Receives one response's events; the base collects a small body in memory and fires
    its C{deferred} with (head, body) at the end.
    """

    def __init__(self, limit: int = 64 * 1024 * 1024) -> None:
        self.deferred: Deferred[Any] = Deferred()
        self.head: ResponseHead | None = None
        self._chunks: list[bytes] = []
        self._limit = limit
        self._size = 0

    def onHead(self, head: ResponseHead) -> None:
        """The response's head arrived."""
        self.head = head
        if head.size > self._limit:
            raise MalformedFrame("answer too large")

    def onData(self, data: bytes) -> None:
        """Body bytes arrived."""
        self._chunks.append(data)

    def onEnd(self, trailer: Trailer | None) -> None:
        """The response is complete (C{trailer}: a FETCH body's)."""
        self.deferred.callback((self.head, b"".join(self._chunks)))

    def onLost(self, reason: Failure) -> None:
        """The connection was lost before the response's end."""
        self.deferred.errback(reason)

    def canSplice(self) -> bool:
        """Whether body bytes may bypass L{onData} (L{onSpliced}): only file sinks."""
        return False

    def onSpliced(self, pipe: int, length: int) -> None:
        """C{length} body bytes are waiting in C{pipe}: take them all."""
        raise NotImplementedError


class FileClientProtocol(Protocol, IdleTimeout):
    """
    Sends requests (pipelined) and routes each response to its sink, in order; gives
    up after C{idleTimeout} seconds without a byte from the server.

    @ivar lostReason: why the protocol closed the connection itself, if it did.
    """

    transport: IConnectionTransport
    log = Logger(namespace="twisted_udpsuite.files")

    def __init__(self, reactor: IReactorTime, idleTimeout: float = 60.0) -> None:
        self.clock = reactor
        self._idleTimeout = idleTimeout
        self._parser = ResponseParser()
        self._sinks: list[ResponseSink] = []
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
        self.setTimeout(self._idleTimeout)

    def timeoutConnection(self) -> None:
        """No byte from the server for the idle timeout: close, failing the requests."""
        self.lostReason = Failure(FetchError(f"no data from the server for {self._idleTimeout}s"))  # type: ignore[no-untyped-call]
        self.transport.abortConnection()

    def request(self, request: Request, sink: ResponseSink) -> Deferred[Any]:
        """Send C{request}; C{sink} gets its response (its C{deferred} fires at the end)."""
        self._parser.expect(isinstance(request, Fetch))
        self._sinks.append(sink)
        self.transport.write(encodeRequest(request))
        return sink.deferred

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        if self._opening is not None and not self._checkOpening(data):
            return
        try:
            self._dispatch(self._parser.feed(data))
            self._maybeSplice()
        except MalformedFrame as e:
            self.lostReason = Failure(FetchError(f"bad answer from the server: {e}"))  # type: ignore[no-untyped-call]
            self.transport.abortConnection()
        except Exception:
            self.lostReason = Failure()  # type: ignore[no-untyped-call]
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
            )  # type: ignore[no-untyped-call]
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
            or not canSplice(self.transport)
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
        overrideDoRead(self.transport, self._spliceRead)

    def _stopSplice(self) -> None:
        self._splicing = False
        restoreDoRead(self.transport, self._spliceRead)

    def _spliceRead(self) -> Any:
        """The transport's C{doRead} while splicing: returns what C{doRead} would."""
        assert self._pipe is not None
        pipeRead, pipeWrite = self._pipe
        socket = self.transport.fileno()  # type: ignore[attr-defined]  # a tcp.Connection
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
                if e.errno in NO_SPLICE:
                    # Read the ordinary way (the socket stays readable, so the reactor
                    # calls Twisted's doRead next).
                    self._noSplice = True
                    self._stopSplice()
                    return None
                return main.CONNECTION_LOST
            if n == 0:
                return main.CONNECTION_DONE
            self.resetTimeout()
            try:
                sink = self._sinks[0]
                sink.onSpliced(pipeRead, n)
                events = self._parser.bodyTaken(n)
                if not self._parser.bodyRemaining or not sink.canSplice():
                    self._stopSplice()
                self._dispatch(events)
            except Exception:
                self.lostReason = Failure()  # type: ignore[no-untyped-call]
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
        self.setTimeout(None)
        failure = self.lostReason or reason
        if failure.check(ConnectionDone, ConnectionLost):  # type: ignore[no-untyped-call]
            failure = Failure(TransferInterrupted("the connection was lost"))  # type: ignore[no-untyped-call]
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.onLost(failure)


def canSplice(transport: object) -> bool:
    """Whether C{transport} is a plain TCP socket that C{os.splice} can read from."""
    return (
        hasattr(os, "splice")
        and fcntl is not None
        and hasattr(fcntl, "F_SETPIPE_SZ")
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and bool(transport.connected)
    )


def clientEndpoint(
    reactor: IReactorTCPTime, host: str, port: int, timeout: float
) -> IStreamClientEndpoint:
    """
    The endpoint that connects to C{host}: an address directly, a name through a
    C{HostnameEndpoint} (resolved by the reactor's resolver, each address tried).
    """
    # Imported here, not with the module: importing twisted.internet.endpoints reads
    # and clears systemd's LISTEN_FDS (for its systemd: endpoint strings), and a
    # service importing this package must still find its sockets there.
    from twisted.internet.endpoints import (
        HostnameEndpoint,
        TCP4ClientEndpoint,
        TCP6ClientEndpoint,
    )

    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)  # type: ignore[no-untyped-call]
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


async def connect(
    reactor: IReactorTCPTime, address: tuple[str, int], timeout: float, idleTimeout: float
) -> FileClientProtocol:
    """
    A L{FileClientProtocol} connected to C{address} (a host name or an address, and a
    port) within C{timeout} seconds.  Fails with L{FetchError}; cancelling stops the
    attempt (C{CancelledError}).
    """
    from twisted.internet.endpoints import connectProtocol  # see clientEndpoint

    protocol = FileClientProtocol(reactor, idleTimeout)
    endpoint = clientEndpoint(reactor, address[0], address[1], timeout)
    try:
        await connectProtocol(endpoint, protocol)  # type: ignore[no-untyped-call]
    except (CancelledError, ConnectingCancelledError):
        raise CancelledError() from None
    except Exception as e:
        raise FetchError(f"cannot connect to {address[0]}:{address[1]}: {e}") from None
    return protocol
