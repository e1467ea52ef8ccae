"""
The file service (C{twistd -n udpsuite files}): our protocol, optionally HTTP and plain.

C{--http-port} serves the same root through C{twisted.web.static.File} (Range requests,
directory listings) so that curl and browsers reach the same files; a subclass refuses
symlinks that lead out of the root, which C{static.File} alone would follow.

C{--plain-port} serves it over the socket tutorials' bare-name protocol
(L{twisted_udpsuite.files.plain}).  It is off by default: it cannot say "not found" or
"busy" (a refusal is a connection closed with nothing sent), so it is a compatibility
port to open on purpose; L{ports.FILES_PLAIN} (8001) is its conventional number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IListeningPort
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.files.counts import RequestCounts
from twisted_udpsuite.files.plain import NAME_GAP, PlainFileFactory
from twisted_udpsuite.files.server import FileServerFactory
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    Offer,
    ServedRootOptions,
    ServiceSpec,
    checkPort,
    numberOption,
)

if TYPE_CHECKING:
    from twisted_udpsuite.files.http import FileSite

__all__ = ["FileService", "Options", "SPEC", "makeService"]


class FileService(ListeningService):
    """
    Listens with a L{FileServerFactory}, with an HTTP site if C{httpPort} is set, and
    with a L{PlainFileFactory} (the same limits) if C{plainPort} is set.

    Starting raises C{twisted.internet.error.CannotListenError} if a port cannot
    be bound (and leaves none bound).

    @param nameGap: the plain port's quiet gap that ends a name
        (L{twisted_udpsuite.files.plain.NAME_GAP}).
    """

    def __init__(
        self,
        root: FilePath[str],
        port: int = ports.FILES,
        interface: str = "",
        httpPort: int | None = None,
        reactor: IReactorNetwork | None = None,
        plainPort: int | None = None,
        nameGap: float | None = None,
        **limits: Any,
    ) -> None:
        reactor = reactorOr(reactor)
        self.root = root
        self.port = port
        self.interface = interface
        self.httpPort = httpPort
        self.plainPort = plainPort
        self.factory = FileServerFactory(root, reactor, **limits)
        self.httpSite: FileSite | None = None  # with httpPort
        self.plainFactory: PlainFileFactory | None = None  # with plainPort
        serving = f", serving {root.path}"
        listeners = [Listener("files", "tcp", port, self.factory, interface, detail=serving)]
        if httpPort is not None:
            from twisted_udpsuite.files.http import httpSite  # twisted.web only if asked

            site = self.httpSite = httpSite(root, reactor)
            listeners.append(Listener("files-http", "tcp", httpPort, site, interface))
        if plainPort is not None:
            gap = NAME_GAP if nameGap is None else nameGap
            plain = self.plainFactory = PlainFileFactory(root, reactor, nameGap=gap, **limits)
            listeners.append(Listener("files-plain", "tcp", plainPort, plain, interface))
        super().__init__(listeners, reactor)

    def _portNamed(self, name: str) -> IListeningPort | None:
        for listener in self.listeners:
            if listener.name == name:
                return listener.listening  # type: ignore[no-any-return]
        return None

    @property
    def listening(self) -> IListeningPort | None:
        """The file protocol's port, once started."""
        return cast("IListeningPort | None", self.portOf(0))

    @property
    def httpListening(self) -> IListeningPort | None:
        """The HTTP port, once started (C{None} without C{httpPort})."""
        return self._portNamed("files-http")

    @property
    def plainListening(self) -> IListeningPort | None:
        """The plain port, once started (C{None} without C{plainPort})."""
        return self._portNamed("files-plain")

    @property
    def httpCounts(self) -> RequestCounts | None:
        """The HTTP side's L{RequestCounts} (C{None} without HTTP), for metrics."""
        return None if self.httpSite is None else self.httpSite.counts

    @property
    def plainCounts(self) -> RequestCounts | None:
        """The plain side's L{RequestCounts} (C{None} without it), for metrics."""
        return None if self.plainFactory is None else self.plainFactory.counts


class Options(ServedRootOptions):
    """C{twistd -n udpsuite files}: the TCP file server."""

    defaultPort = ports.FILES
    optParameters = [
        ["max-connections", None, 256, "Open connections in total.",
         numberOption("max-connections", int, low=1)],
        ["max-per-host", None, 16, "Open connections per client.",
         numberOption("max-per-host", int, low=1)],
        ["idle-timeout", None, 120.0, "Seconds without traffic before closing.",
         numberOption("idle-timeout", above=0)],
        ["header-timeout", None, 10.0, "Seconds to finish a request line.",
         numberOption("header-timeout", above=0)],
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self["http-port"] = None
        self["plain-port"] = None

    def opt_http_port(self, value: str) -> None:
        """Also serve the root over HTTP on this port (same --interface)."""
        self["http-port"] = checkPort(value, "--http-port")

    def opt_plain_port(self, value: str) -> None:
        """Also serve the root over the tutorials' bare-name protocol on this port (8001, say)."""
        self["plain-port"] = checkPort(value, "--plain-port")


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> FileService:
    """Build the file service from parsed L{Options}."""
    return FileService(
        options["root"],
        port=options["port"],
        interface=options["interface"],
        httpPort=options["http-port"],
        plainPort=options["plain-port"],
        reactor=reactor,
        maxConnections=int(options["max-connections"]),
        maxPerHost=int(options["max-per-host"]),
        idleTimeout=options["idle-timeout"],
        headerTimeout=options["header-timeout"],
    )


SPEC = ServiceSpec(
    "files",
    "TCP file server (optionally HTTP and the plain protocol too)",
    Options,
    makeService,
    offers=(Offer("files", "tcp"), Offer("http", "tcp", "http-port")),
)
