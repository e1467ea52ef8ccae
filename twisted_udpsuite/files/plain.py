"""
The plain file protocol of the socket tutorials' 文件下载器, both sides (C{--plain-port}).

The client connects, sends a bare file name (UTF-8, no framing), and reads until the
server closes; the server sends the file's bytes and closes, or closes with nothing sent
when it will not or cannot (a missing file looks like an empty one).  There is no status,
no size and no digest, so a client cannot tell a complete answer from a cut one except
by how the connection ended (a reset is an error, a close is the end).

Server (L{PlainFileFactory}): the name is what arrives before the first newline (one
trailing C{\\r\\n} or C{\\n} is dropped), before the client half-closes, or before a quiet
gap of L{NAME_GAP} seconds (the tutorial client sends the name alone, with nothing after
it); at most L{MAX_NAME} bytes.  It is confined and opened exactly as a framed FETCH is
(L{server.resolveFile}, L{server.openRegularFile}) and sent by the same body senders
(C{sendfile} on a TCP socket), without the trailer.  Limits, drain and counts are the
framed factory's (L{server.FileServerFactory}); a refusal of any kind closes the
connection with nothing sent, and the one log event of the request says why.

Client (L{fetchPlain}, L{fetchPlainTo}): send the name in one write, as the tutorial
client does, and read to the end.  It does not half-close after the name, though that
would spare our server the gap: many servers take a client's EOF for the end of the
connection and close before answering (Twisted protocols that are not
C{IHalfCloseableProtocol}, Node's default C{allowHalfOpen: false}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.connections import IConnectionTransport, IdleTimeout
from twisted_udpsuite.files.errors import FetchError
from twisted_udpsuite.files.senders import startBody
from twisted_udpsuite.files.served import errorStatus, openRegularFile, resolveFile
from twisted_udpsuite.files.server import FileServerConnection, FileServerFactory
from twisted_udpsuite.files.sinks import Writer
from twisted_udpsuite.files.wire import Status
from twisted_udpsuite.paths import AtomicFileWriter, UnsafePath
from twisted_udpsuite.reactors import IReactorTCPTime, reactorOr

__all__ = [
    "MAX_NAME",
    "NAME_GAP",
    "NameReader",
    "NameTooLong",
    "NothingReceived",
    "PlainFileFactory",
    "PlainFileProtocol",
    "PlainResult",
    "fetchPlain",
    "fetchPlainTo",
]

#: The longest name taken, in bytes (the tutorial server's one C{recv(1024)}).
MAX_NAME = 1024
#: Seconds of quiet after which the bytes received are the whole name.  The tutorial
#: client sends its name in one C{send} and then only reads, so the name is complete
#: when it arrives; the wait only covers a name split over two segments, whose second
#: part a sender's Nagle algorithm may hold until the first is acknowledged (a
#: delayed ACK: 40 ms on Linux, up to 200 ms on Windows).
NAME_GAP = 0.25
#: Bytes asked of the socket per read by the client.
RECV_SIZE = 256 * 1024


# The name, as bytes arrive (pure: no timers, no I/O).


class NameTooLong(ValueError):
    """More than L{MAX_NAME} bytes arrived without ending the name."""


class NameReader:
    """
    Collects a plain client's file name from the bytes it sends.

    L{feed} returns the name once a newline arrives (bytes after it are not part of it);
    the caller ends it otherwise, after a quiet gap or at the end of input, with L{end}.
    One C{\\r} before the newline is dropped too.  A name over C{limit} bytes raises
    L{NameTooLong}, as soon as that is certain.
    """

    def __init__(self, limit: int = MAX_NAME) -> None:
        self._limit = limit
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        """Whether any byte of a name has arrived."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> bytes | None:
        """Take C{data}; the name if it is now complete, else C{None}."""
        newline = data.find(b"\n")
        if newline < 0:
            self._buffer += data
            # A name of the limit may still be followed by its "\r\n".
            if len(self._buffer) > self._limit + 1:
                raise NameTooLong(f"no end of the name within {self._limit} bytes")
            return None
        self._buffer += data[:newline]
        if self._buffer.endswith(b"\r"):
            del self._buffer[-1]
        return self._take()

    def end(self) -> bytes:
        """The name is complete (a quiet gap, or the end of input): return it."""
        return self._take()

    def _take(self) -> bytes:
        name = bytes(self._buffer)
        self._buffer.clear()
        if len(name) > self._limit:
            raise NameTooLong(f"a name of {len(name)} bytes (at most {self._limit})")
        return name


# The server.


@implementer(IHalfCloseableProtocol)
class PlainFileProtocol(FileServerConnection):
    """
    One plain request: read the name, send the file (or nothing), close.

    Timers on the factory's clock: the name gap (L{PlainFileFactory.nameGap}); the
    header timeout, from the first byte of the name to its end; the idle timeout, no
    traffic either way (before a name, or a stalled reader during the body).
    """

    factory: PlainFileFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        self._reader = NameReader(self.factory.maxName)
        self._name: bytes | None = None
        self._started = self.factory.reactor.seconds()
        self._done = False
        self._stalled = False
        self._gapCall: IDelayedCall | None = None
        self._headerCall: IDelayedCall | None = None

    # Timers

    def timeoutConnection(self) -> None:
        """No traffic for the idle timeout: abort a stalled body or close, or refuse."""
        if self._sender is not None:
            self.log.info("aborting stalled transfer to {peer}", peer=self.peer)
            self._stalled = True
            self.transport.abortConnection()
        elif self._done:
            # Answered, but the reader never took the buffered end of it: the close
            # waits for that, so it would never come.
            self.transport.abortConnection()
        else:
            self._refuse(Status.TIMEOUT, "idle timeout", "no name within the idle timeout")

    def _gapPassed(self) -> None:
        self._gapCall = None
        self._nameEnded()

    def _headerTimedOut(self) -> None:
        self._headerCall = None
        self._refuse(Status.TIMEOUT, "name timeout", "the name did not end in time")

    def _cancelTimers(self, idle: bool = True) -> None:
        for call in (self._gapCall, self._headerCall):
            if call is not None and call.active():
                call.cancel()
        self._gapCall = self._headerCall = None
        if idle:
            self.setTimeout(None)

    # Input

    def dataReceived(self, data: bytes) -> None:
        if self._name is not None or self._done:
            return  # nothing but the name is expected
        self.resetTimeout()
        try:
            name = self._reader.feed(data)
        except NameTooLong as e:
            self._refuse(Status.TOO_LARGE, "name too long", str(e))
            return
        if name is not None:
            self._answer(name)
            return
        reactor = self.factory.reactor
        if self._gapCall is not None and self._gapCall.active():
            self._gapCall.reset(self.factory.nameGap)
        else:
            self._gapCall = reactor.callLater(self.factory.nameGap, self._gapPassed)
        if self._headerCall is None:
            self._headerCall = reactor.callLater(self.factory.headerTimeout, self._headerTimedOut)

    def readConnectionLost(self) -> None:
        """The client half-closed: what it sent is the name."""
        if self._name is not None or self._done:
            return
        if self._reader.pending:
            self._nameEnded()
        else:
            self._refuse(Status.BAD_REQUEST, "no name", "the client sent no name")

    def writeConnectionLost(self) -> None:
        self.transport.abortConnection()

    def _nameEnded(self) -> None:
        try:
            name = self._reader.end()
        except NameTooLong as e:
            self._refuse(Status.TOO_LARGE, "name too long", str(e))
            return
        self._answer(name)

    # The answer

    def _answer(self, name: bytes) -> None:
        self._name = name
        self._cancelTimers(idle=False)
        try:
            path = resolveFile(self.factory.root, name)
            fd, st = openRegularFile(path)
        except UnsafePath as e:
            self._refuse(Status.FORBIDDEN, "path refused", e.reason)
            return
        except OSError as e:
            status, message = errorStatus(e)
            self._refuse(status, message, message)
            return
        self._sender = startBody(self, fd, 0, st, None, trailer=False)

    def bodyDone(self, sent: int, outcome: str, abort: bool = False, aborted: bool = False) -> None:
        """The body sender finished (or failed, or the client went away)."""
        self._sender = None
        reason = "stalled: nothing taken within the idle timeout" if self._stalled else ""
        self._requestDone(Status.OK, outcome, sent, reason)
        if abort:
            self.transport.abortConnection()
        elif not aborted:
            self.transport.loseConnection()

    def _refuse(self, status: int, outcome: str, reason: str) -> None:
        """Close with nothing sent, as the tutorial server does for a missing file."""
        self._requestDone(status, outcome, 0, reason)
        self.transport.loseConnection()

    def _requestDone(self, status: int, outcome: str, sent: int, reason: str) -> None:
        if self._done:
            return
        self._done = True
        self._cancelTimers(idle=False)  # the idle timer still bounds the close
        if self._cut:
            outcome = "cut"
        label = outcome
        if status != Status.OK:
            why = f" ({reason})" if reason and reason != outcome else ""
            label = f"{status} {outcome}{why}, nothing sent"
        name = self._name if self._name is not None else b""
        self.factory.requestDone(
            "PLAIN",
            name.decode("utf-8", "backslashreplace"),
            self.peer,
            label,
            sent,
            self._started,
            status,
            protocol="plain",
            reason=reason,
        )

    # Stopping (see FileServerFactory.drain)

    def drain(self) -> None:
        """The server is stopping: a connection still reading its name closes now."""
        if self._sender is None and not self._done:
            self._refuse(Status.BUSY, "server stopping", "the server is stopping")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._sender is not None:
            self._sender.stopProducing()
        elif not self._done:
            self._requestDone(
                Status.BAD_REQUEST, "client disconnected", 0, "gone before its name ended"
            )
        self._cancelTimers()
        self.factory.connectionClosed(self)


class PlainFileFactory(FileServerFactory):
    """
    Serves the files below C{root} over the plain protocol (L{PlainFileProtocol}).

    Takes L{FileServerFactory}'s arguments (the same limits, timeouts and drain; the
    header timeout bounds the name) and:

    @param nameGap: seconds of quiet that end a name (L{NAME_GAP}).
    @param maxName: the longest name taken, in bytes (L{MAX_NAME}).
    """

    protocol = PlainFileProtocol

    def __init__(
        self,
        root: FilePath[str],
        reactor: IReactorTCPTime | None = None,
        *,
        nameGap: float = NAME_GAP,
        maxName: int = MAX_NAME,
        **limits: Any,
    ) -> None:
        super().__init__(root, reactor, **limits)
        self.nameGap = nameGap
        self.maxName = maxName

    def refuse(self, status: int, message: str) -> Protocol | None:
        """Over a limit: closed at once, nothing sent (there is no way to say why)."""
        return None


# The client.


class NothingReceived(FetchError):
    """The server closed without sending a byte: the file is missing, refused or empty."""


@dataclass(frozen=True)
class PlainResult:
    """
    A finished plain download.

    @ivar path: where it was saved (C{None} for L{fetchPlainTo}).
    @ivar size: the bytes received.
    """

    path: FilePath[str] | None
    size: int
    duration: float


class _PlainReceiver(Protocol, IdleTimeout):
    """
    Sends the name and hands every byte to C{write} until the server closes; gives up
    after C{idleTimeout} seconds without a byte (L{IdleTimeout}, on C{reactor}).
    """

    transport: IConnectionTransport

    def __init__(
        self,
        reactor: IReactorTime,
        name: bytes,
        write: Callable[[bytes], object],
        progress: Callable[[int, int | None], None] | None,
        idleTimeout: float,
    ) -> None:
        self.clock = reactor
        self._name = name
        self._failure: Failure | None = None
        self._write = write
        self._progress = progress
        self._idleTimeout = idleTimeout
        self.received = 0
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = RECV_SIZE
        self.transport.write(self._name)
        self.setTimeout(self._idleTimeout)

    def timeoutConnection(self) -> None:
        self._failure = Failure(  # type: ignore[no-untyped-call]
            FetchError(f"no data from the server for {self._idleTimeout}s")
        )
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self.resetTimeout()
        try:
            self._write(data)
        except Exception:
            self._failure = Failure()  # type: ignore[no-untyped-call]
            self.transport.abortConnection()
            return
        self.received += len(data)
        if self._progress is not None:
            self._progress(self.received, None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        if self._failure is not None:
            self.done.errback(self._failure)
        elif reason.check(ConnectionDone):  # type: ignore[no-untyped-call]
            self.done.callback(self.received)
        else:
            self.done.errback(
                FetchError(
                    f"the connection was lost after {self.received} bytes "
                    f"({reason.getErrorMessage()}): the answer is incomplete"
                )
            )


class _ReceiverFactory(ClientFactory):
    noisy = False

    def __init__(self, receiver: _PlainReceiver) -> None:
        self._receiver = receiver

    def buildProtocol(self, addr: IAddress | None) -> _PlainReceiver:
        return self._receiver

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self._receiver.done.errback(reason)


def _receive(
    reactor: IReactorTCPTime,
    address: tuple[str, int],
    name: str,
    write: Callable[[bytes], object],
    progress: Callable[[int, int | None], None] | None,
    timeout: float,
    idleTimeout: float,
) -> Deferred[int]:
    """Ask for C{name}; fires with the byte count at a clean close. Cancel to abort."""
    receiver = _PlainReceiver(
        reactor, name.encode("utf-8", "surrogateescape"), write, progress, idleTimeout
    )
    connector = reactor.connectTCP(
        address[0], address[1], _ReceiverFactory(receiver), timeout=timeout
    )

    def cancel(d: Deferred[int]) -> None:
        if receiver.transport is not None:
            receiver.transport.abortConnection()
        else:
            connector.stopConnecting()

    outer: Deferred[int] = Deferred(cancel)

    def forward(result: int | Failure) -> None:
        if outer.called:
            return  # cancelled: the connection's end is of no interest now
        if isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)

    receiver.done.addBoth(forward)
    return outer


def _nothing(name: str) -> NothingReceived:
    return NothingReceived(
        f"nothing received: {name!r} is missing, refused or empty on the server "
        "(the plain protocol cannot say which); nothing written"
    )


def fetchPlain(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    name: str,
    destination: FilePath[str],
    *,
    overwrite: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
) -> Deferred[PlainResult]:
    """
    Download C{name} from a plain server into C{destination}, atomically.

    The bytes go to a hidden temporary sibling (L{AtomicFileWriter}) that is published
    under C{destination} only when the server closes cleanly after sending something.
    Fails with L{NothingReceived} on an empty answer, L{FetchError} when the connection
    is reset or idle for C{idleTimeout} seconds, C{FileExistsError} if C{destination}
    exists and not C{overwrite}; cancelling aborts the connection.  Nothing is left
    behind by a failure.

    @param progress: called with (bytes received, C{None}): no size is known.
    """
    reactor = reactorOr(reactor)
    started = reactor.seconds()

    async def go() -> PlainResult:
        writer = AtomicFileWriter(destination, overwrite=overwrite)
        try:
            size = await _receive(
                reactor, address, name, writer.write, progress, timeout, idleTimeout
            )
            if size == 0:
                raise _nothing(name)
            writer.commit()
        finally:
            writer.abort()
        return PlainResult(writer.target, size, reactor.seconds() - started)

    return Deferred.fromCoroutine(go())


def fetchPlainTo(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    name: str,
    output: Writer,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
) -> Deferred[PlainResult]:
    """
    Stream C{name} from a plain server into C{output} (anything with C{write(bytes)})
    as it arrives; failures as for L{fetchPlain} (bytes already written stay written).
    """
    reactor = reactorOr(reactor)
    started = reactor.seconds()

    async def go() -> PlainResult:
        size = await _receive(reactor, address, name, output.write, progress, timeout, idleTimeout)
        if size == 0:
            raise _nothing(name)
        return PlainResult(None, size, reactor.seconds() - started)

    return Deferred.fromCoroutine(go())
