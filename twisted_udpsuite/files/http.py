"""
The same root over HTTP (C{--http-port}), through C{twisted.web.static.File}.

Imported only when HTTP is asked for, so the file service does not load twisted.web.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web import http, pages, server, static
from twisted.web.resource import IResource
from zope.interface import implementer

from twisted_udpsuite.connections import IConnectionTransport
from twisted_udpsuite.drain import Drain, IDrainable
from twisted_udpsuite.files.counts import RequestCounts
from twisted_udpsuite.paths import isTemporaryName, isWithin
from twisted_udpsuite.reactors import reactorOr

__all__ = ["ConfinedFile", "FileSite", "confinedFile", "httpSite"]

_log = Logger(namespace="twisted_udpsuite.files")


class ConfinedFile(static.File):
    """C{static.File} that will not follow a symlink out of C{root} nor show uploads."""

    confinedRoot: FilePath[str]

    def getChild(self, path: bytes, request: Any) -> Any:
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            # No such name can exist here; Twisted answers the same 404 but logs each
            # one with a traceback.
            return pages.notFound()
        child = super().getChild(path, request)  # type: ignore[no-untyped-call]
        if isinstance(child, static.File):
            name = child.basename()
            if not isWithin(self.confinedRoot, child) or isTemporaryName(name):
                return pages.notFound()
        return child

    def makeProducer(self, request: Any, fileForReading: Any) -> Any:
        byteRange = request.getHeader(b"range")
        if byteRange is not None and not byteRange.isascii():
            # A Range header is ASCII or malformed, and a malformed one is ignored (RFC 9110
            # §14.2); Twisted's own notice of it decodes it as UTF-8, and any other byte
            # makes that a traceback and a 500.
            request.requestHeaders.removeHeader(b"range")
        return super().makeProducer(request, fileForReading)  # type: ignore[no-untyped-call]

    def createSimilarFile(self, path: str) -> ConfinedFile:
        f: ConfinedFile = super().createSimilarFile(path)  # type: ignore[no-untyped-call]
        f.confinedRoot = self.confinedRoot
        return f


def confinedFile(root: FilePath[str]) -> ConfinedFile:
    """The HTTP resource for C{root}."""
    f = ConfinedFile(root.path)
    f.confinedRoot = root
    return f


class _Channel(http.HTTPChannel):
    """An HTTP connection its L{FileSite} knows of, so that it can be drained."""

    factory: FileSite
    transport: IConnectionTransport

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self.factory.channels.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self.factory.channelClosed(self)


class _Request(server.Request):
    """A request that knows when it arrived (for its log line's duration)."""

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        super().__init__(channel, *args, **kw)  # type: ignore[no-untyped-call]
        self.arrived = channel.factory._clock.seconds()

    def process(self) -> None:
        if not self.uri.isascii() or not self.path.startswith(b"/"):
            # A request target is ASCII in origin form (RFC 9112 §3.2); Twisted drops the
            # first byte as if it were the slash and renders the rest, so C{\x92sub/} would be a
            # traceback and a 500 from its listing.
            self.setResponseCode(http.BAD_REQUEST)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
            self.write(b"bad request target\n")  # type: ignore[no-untyped-call]
            self.finish()  # type: ignore[no-untyped-call]
            return
        super().process()  # type: ignore[no-untyped-call]


@implementer(IDrainable)
class FileSite(server.Site):
    """
    A quiet C{Site} that logs and counts its answers (L{RequestCounts}) and can be drained.

    @ivar channels: the open HTTP connections.
    """

    # Twisted types a Site's protocol as its generic (HTTP/2-capable) channel; this
    # site's is an HTTPChannel, as its buildProtocol returns.
    protocol = _Channel  # type: ignore[assignment]
    requestFactory = _Request

    def __init__(self, resource: IResource, reactor: IReactorTime | None = None) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self.noisy = False
        self._clock = reactorOr(reactor)
        self.channels: set[_Channel] = set()
        self.counts = RequestCounts(lambda: len(self.channels))
        self._drain = Drain(self._clock, self._cutRemaining)

    def log(self, request: Any) -> None:
        """Log and count each finished request (C{twisted.web}'s access-log hook)."""
        code = int(request.code)
        outcome = "ok" if code < 400 else "error"
        self.counts.answered(code, outcome, request.sentLength)
        self._logRequest(request, outcome)

    def _logRequest(self, request: Any, outcome: str) -> None:
        _log.info(
            "{method} {file!r} from {peer}: {status} {outcome}, {bytes} bytes in {duration:.3f}s",
            method=request.method.decode("ascii", "replace"),
            file=request.path.decode("utf-8", "replace"),
            peer=request.getClientAddress().host,
            status=int(request.code),
            outcome=outcome,
            bytes=request.sentLength,
            duration=self._clock.seconds() - getattr(request, "arrived", self._clock.seconds()),
            service="files",
            protocol="http",
            filesRequest=True,
        )

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        if self._drain.stopping:
            self.counts.refused["stopping"] += 1
            return None  # the connection is closed at once
        channel: Protocol | None = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        return channel

    def channelClosed(self, channel: _Channel) -> None:
        self.channels.discard(channel)
        self._drain.check(not self.channels)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Like L{twisted_udpsuite.files.server.FileServerFactory.drain}: idle connections
        close now, a response being sent closes when done, and after C{timeout} seconds
        the connections left are dropped (their requests are logged as C{cut}).
        """
        d = self._drain.begin(timeout, not self.channels)
        for channel in list(self.channels):
            if channel.requests:
                channel.persistent = False  # close once this response is sent
            else:
                channel.loseConnection()  # type: ignore[no-untyped-call]
        return d

    def _cutRemaining(self) -> None:
        for channel in list(self.channels):
            for request in channel.requests:
                self.counts.answered(int(request.code), "cut", request.sentLength)
                self._logRequest(request, "cut")
            channel.transport.abortConnection()


def httpSite(root: FilePath[str], reactor: IReactorTime | None = None) -> FileSite:
    """A quiet C{Site} serving C{root} (Range requests, listings, no escapes)."""
    return FileSite(confinedFile(root), reactor)
