"""
The file service (C{twistd -n udpsuite files}): our protocol, and optionally HTTP.

C{--http-port} serves the same root through C{twisted.web.static.File} (Range requests,
directory listings) so that curl and browsers reach the same files; a subclass refuses
symlinks that lead out of the root, which C{static.File} alone would follow.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.files.server import FileServerFactory
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import ServiceOptions, ServiceSpec, checkPort, numberOption

__all__ = ["FileService", "Options", "SPEC", "makeService"]


class FileService(Service):
    """
    Listens with a L{FileServerFactory}, and with an HTTP site if C{httpPort} is set.

    L{startService} raises L{twisted.internet.error.CannotListenError} if a port cannot
    be bound (and leaves none bound).
    """

    log = Logger(namespace="twisted_udpsuite.files")

    def __init__(
        self,
        root: FilePath,
        port: int = ports.FILES,
        interface: str = "",
        httpPort: int | None = None,
        reactor: Any = None,
        **limits: Any,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.root = root
        self.port = port
        self.interface = interface
        self.httpPort = httpPort
        self.factory = FileServerFactory(root, self._reactor, **limits)
        self.listening: IListeningPort | None = None
        self.httpListening: IListeningPort | None = None
        self.httpSite: Any = None  # the HTTP FileSite, once started with httpPort

    def startService(self) -> None:
        self.listening = self._reactor.listenTCP(self.port, self.factory, interface=self.interface)
        if self.httpPort is not None:
            try:
                from twisted_udpsuite.files.http import httpSite  # twisted.web only if asked

                site = self.httpSite = httpSite(self.root, self._reactor)
                self.httpListening = self._reactor.listenTCP(
                    self.httpPort, site, interface=self.interface
                )
            except Exception:
                self.listening.stopListening()
                self.listening = None
                raise
        super().startService()
        self.log.info(
            "files: serving {root} on {interface}:{port}{http}",
            root=self.root.path,
            interface=self.interface or "*",
            port=self.listening.getHost().port,
            http=(
                f" (HTTP on port {self.httpListening.getHost().port})"
                if self.httpListening is not None
                else ""
            ),
        )

    @property
    def httpCounts(self) -> Any:
        """The HTTP side's L{RequestCounts} (L{None} without HTTP), for metrics."""
        return None if self.httpSite is None else self.httpSite.counts

    def drain(self, timeout: float) -> Deferred[Any]:
        """Stop without cutting transfers (L{FileServerFactory.drain}), HTTP too."""
        sides = [self.factory] + ([self.httpSite] if self.httpSite is not None else [])
        return gatherResults([side.drain(timeout) for side in sides])

    def stopService(self) -> Any:
        super().stopService()
        waits = [
            maybeDeferred(p.stopListening)
            for p in (self.listening, self.httpListening)
            if p is not None
        ]
        self.listening = self.httpListening = None
        return gatherResults(waits)


class Options(ServiceOptions):
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
        self["root"] = FilePath(os.getcwd())
        self["http-port"] = None

    def opt_root(self, value: str) -> None:
        """Directory to serve (default: the current directory)."""
        path = FilePath(os.path.abspath(value))
        if not path.isdir():
            raise usage.UsageError(f"--root: {value!r} is not a directory")
        self["root"] = path

    def opt_http_port(self, value: str) -> None:
        """Also serve the root over HTTP on this port (same --interface)."""
        self["http-port"] = checkPort(value, "--http-port")


def makeService(options: Options, reactor: Any = None) -> FileService:
    """Build the file service from parsed L{Options}."""
    return FileService(
        options["root"],
        port=options["port"],
        interface=options["interface"],
        httpPort=options["http-port"],
        reactor=reactor,
        maxConnections=int(options["max-connections"]),
        maxPerHost=int(options["max-per-host"]),
        idleTimeout=options["idle-timeout"],
        headerTimeout=options["header-timeout"],
    )


SPEC = ServiceSpec("files", "TCP file server (optionally HTTP too)", Options, makeService)
