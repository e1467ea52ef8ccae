"""
The TCP file server: pipelined FETCH/LIST/STAT over one connection, bodies streamed
by the senders of L{twisted_udpsuite.files.senders}.
"""

from __future__ import annotations

import json
import os
import stat as statModule
from collections import OrderedDict, deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.connections import (
    IConnectionTransport,
    IdleTimeout,
    LimitedServerFactory,
    peerText,
)
from twisted_udpsuite.drain import Drain, IDrainable
from twisted_udpsuite.files.counts import RequestCounts, outcomeLabel
from twisted_udpsuite.files.senders import BodySender, startBody, tuneTransport
from twisted_udpsuite.files.served import (
    errorStatus,
    fileKind,
    fileVersion,
    openRegularFile,
    resolveFile,
)
from twisted_udpsuite.files.wire import (
    Fetch,
    ListDir,
    MalformedFrame,
    Request,
    RequestParser,
    Status,
    encodeResponseHead,
)
from twisted_udpsuite.paths import UnsafePath, isTemporaryName, relativeName
from twisted_udpsuite.reactors import IReactorTCPTime, reactorOr

__all__ = ["FileServerFactory", "FileServerProtocol"]

#: Requests queued behind the current one before the server stops reading.
MAX_PIPELINE = 32
#: Directory entries per LIST answer (the listing is built in memory).
MAX_LIST = 10000


class FileServerConnection(Protocol, IdleTimeout):
    """
    A connection of a file server, framed (L{FileServerProtocol}) or plain
    (L{twisted_udpsuite.files.plain.PlainFileProtocol}): the idle timer, the body
    sender and the drain that the factory and the senders ask of both.

    @ivar peer: the client's C{host:port}, for log lines.
    """

    factory: FileServerFactory
    transport: IConnectionTransport
    log = Logger(namespace="twisted_udpsuite.files")

    def connectionMade(self) -> None:
        self._sender: BodySender | None = None
        self._cut = False
        tuneTransport(self.transport)
        _, self.peer = peerText(self.transport)
        self.clock = self.factory.reactor
        self.setTimeout(self.factory.idleTimeout)

    def replaceSender(self, sender: BodySender) -> None:
        """Continue the current body with C{sender} (the sendfile path gave up)."""
        self._sender = sender
        sender.start()

    def bodyDone(self, sent: int, outcome: str, abort: bool = False, aborted: bool = False) -> None:
        """The body sender finished (or failed, or the client went away)."""
        raise NotImplementedError

    def drain(self) -> None:
        """The server is stopping: close as soon as the answer in progress allows."""
        raise NotImplementedError

    def cut(self) -> None:
        """The drain time is over: drop the connection, logging its body as C{cut}."""
        self._cut = True
        self.transport.abortConnection()


@implementer(IHalfCloseableProtocol)
class FileServerProtocol(FileServerConnection):
    """
    One client connection: requests are parsed as they arrive and answered in order.

    A client that half-closes after sending its requests (C{printf ... | nc}) still
    gets every answer; the server closes once the last one is sent.

    Limits: a request line over L{wire.MAX_REQUEST} (413, then close), a request not
    completed within C{headerTimeout} (408, close), no traffic either way for
    C{idleTimeout} (408 if idle, abort if a body is stalled), more than
    L{MAX_PIPELINE} queued requests (stop reading until the queue drains).
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self._parser = RequestParser()
        self._queue: deque[Request] = deque()
        self._current: tuple[Request, float] | None = None
        self._closing = False
        self._inputDone = False
        self._readPaused = False
        self._headerCall: IDelayedCall | None = None

    # Timers

    def timeoutConnection(self) -> None:
        """No traffic for the idle timeout: a stalled body is aborted, else 408."""
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
        self.setTimeout(None)
        if self._headerCall is not None and self._headerCall.active():
            self._headerCall.cancel()
        self._headerCall = None

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

    def _fetch(self, request: Fetch, path: FilePath[str]) -> None:
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

    def bodyDone(self, sent: int, outcome: str, abort: bool = False, aborted: bool = False) -> None:
        """The body sender finished (or failed, or the client went away)."""
        self._sender = None
        self._requestDone(sent, outcome)
        if abort:
            self._closing = True
            self.transport.abortConnection()
        elif not aborted:
            self._next()

    def _list(self, path: FilePath[str]) -> None:
        entries: list[dict[str, Any]] = []
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
                    kind = fileKind(st.st_mode)
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

    def _stat(self, path: FilePath[str]) -> None:
        st = os.stat(path.path)
        fields: dict[str, Any] = {"kind": fileKind(st.st_mode), "mtime": st.st_mtime_ns}
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancelTimers()
        if self._sender is not None:
            self._sender.stopProducing()
        self.factory.connectionClosed(self)


def _isSafeEntry(root: FilePath[str], directory: FilePath[str], name: str) -> bool:
    """Hide entries (symlinks) that lead out of the root: they could not be fetched."""
    try:
        relativeName(root, directory.child(name))
    except ValueError:
        return False
    return True


class _Refuser(Protocol):
    """Answers a connection over a limit with its status, then closes."""

    transport: IConnectionTransport

    def __init__(self, status: int, message: str) -> None:
        self._status = status
        self._message = message

    def connectionMade(self) -> None:
        self.transport.write(encodeResponseHead(self._status, self._message))
        self.transport.loseConnection()


@implementer(IDrainable)
class FileServerFactory(LimitedServerFactory[FileServerConnection]):
    """
    Serves the files below C{root} to L{FileServerProtocol}s, within limits.

    @param root: the directory served; requests are confined to it by
        L{twisted_udpsuite.paths.safeDescendant}.
    @param reactor: timers and scheduling (C{None}: the global reactor).
    @param maxConnections: open connections in total (more get 503).
    @param maxPerHost: open connections per client address (more get 429).
    @param idleTimeout: seconds without traffic before a connection is closed.
    @param headerTimeout: seconds to complete a request line once it is started.
    @param digestCache: file versions whose sha256 is remembered (for resumes).
    @param turnDelay: seconds between two turns of a body sender (0: the next reactor
        iteration); a test clock uses a small value to see a body arrive in steps.
    @param sendfile: send bodies whose digest is cached with C{os.sendfile} when the
        transport is a plain TCP socket (C{False}: always copy through Python).
    """

    protocol: type[FileServerConnection] = FileServerProtocol
    log = Logger(namespace="twisted_udpsuite.files")

    def __init__(
        self,
        root: FilePath[str],
        reactor: IReactorTCPTime | None = None,
        maxConnections: int = 256,
        maxPerHost: int = 16,
        idleTimeout: float = 120.0,
        headerTimeout: float = 10.0,
        digestCache: int = 1024,
        turnDelay: float = 0.0,
        sendfile: bool = True,
    ) -> None:
        super().__init__(maxConnections, maxPerHost)
        self.turnDelay = turnDelay
        self.sendfile = sendfile
        self.root = root
        self.reactor = reactorOr(reactor)
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
        self._digests: OrderedDict[str, str] = OrderedDict()
        self._digestCache = digestCache
        self.requestsServed = 0
        self.bytesSent = 0
        self.counts = RequestCounts(self.limits.open.total, refused=self.refusedConnections)
        self._drain = Drain(self.reactor, self._cutRemaining)

    def refusal(self, host: str) -> str | None:
        """C{stopping} while draining, else the limit C{host} is over, or None."""
        return "stopping" if self._drain.stopping else super().refusal(host)

    def refuseConnection(self, host: str, limit: str) -> Protocol | None:
        """Log a refusal over a limit; L{refuse} answers it."""
        if limit == "stopping":
            return self.refuse(Status.BUSY, "server stopping")
        if limit == "total":
            self.log.warn("refused connection from {peer}: server full", peer=host)
            return self.refuse(Status.BUSY, "server busy")
        self.log.warn("refused connection from {peer}: per-host limit", peer=host)
        return self.refuse(Status.TOO_MANY_FROM_YOU, "too many connections from your address")

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

    def connectionClosed(self, proto: FileServerConnection) -> str:
        """C{proto}'s connection is gone: the drain may be over."""
        host = super().connectionClosed(proto)
        self._drain.check(not self.protocols)
        return host

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
        """Keep the sha256 of a file version read whole (the least recent go first)."""
        self._digests[version] = digest
        self._digests.move_to_end(version)
        while len(self._digests) > self._digestCache:
            self._digests.popitem(last=False)
