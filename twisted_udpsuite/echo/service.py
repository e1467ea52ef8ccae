"""
The echo service: UDP and TCP echo on one port number, and its twistd options.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IUDPTransport
from twisted.logger import Logger

from twisted_udpsuite import ports
from twisted_udpsuite.echo.server import (
    MAX_DATAGRAM,
    EchoPolicy,
    EchoStats,
    TCPEchoFactory,
    UDPEchoProtocol,
)
from twisted_udpsuite.localaddress import listenUDP
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import ServiceOptions, ServiceSpec, checkPort, numberOption

__all__ = ["EchoService", "Options", "makeService", "SPEC"]


class EchoService(Service):
    """
    RFC 862 echo on UDP and TCP, bound to the same port number.

    With C{port=0} the UDP port is chosen first and TCP takes the same
    number.  L{startService} raises L{twisted.internet.error.CannotListenError}
    if either port cannot be bound (and leaves neither bound).

    @ivar stats: the L{EchoStats} both sides update.
    @ivar udpPort: the bound UDP port, once started.
    @ivar tcpPort: the bound TCP port, once started (L{None} with C{tcp=False}).
    """

    log = Logger(namespace="twisted_udpsuite.echo")

    def __init__(
        self,
        port: int = ports.ECHO,
        interface: str = "",
        policy: EchoPolicy | None = None,
        tcp: bool = True,
        reactor: Any = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self._reactor = reactor
        self.port = port
        self.interface = interface
        self.stats = EchoStats()
        self.udpProtocol = UDPEchoProtocol(reactor, policy, self.stats)
        self.tcpFactory = TCPEchoFactory(reactor, self.stats) if tcp else None
        self.udpPort: IUDPTransport | None = None
        self.tcpPort: IListeningPort | None = None

    def startService(self) -> None:
        udp = listenUDP(self._reactor, self.port, self.udpProtocol, self.interface, MAX_DATAGRAM)
        bound = udp.getHost().port
        if self.tcpFactory is not None:
            try:
                self.tcpPort = self._reactor.listenTCP(
                    bound, self.tcpFactory, interface=self.interface
                )
            except Exception:
                udp.stopListening()
                raise
        self.udpPort = udp
        super().startService()
        self.log.info(
            "echo listening on {interface}:{port} (UDP{tcp})",
            interface=self.interface or "*",
            port=bound,
            tcp="+TCP" if self.tcpPort is not None else "",
        )

    def stopService(self) -> Any:
        super().stopService()
        waits = [
            maybeDeferred(p.stopListening) for p in (self.udpPort, self.tcpPort) if p is not None
        ]
        self.udpPort = self.tcpPort = None
        return gatherResults(waits)


class Options(ServiceOptions):
    """C{twistd -n udpsuite echo}: RFC 862 echo on UDP and TCP."""

    defaultPort = ports.ECHO
    optFlags = [["no-tcp", None, "Serve UDP only."]]
    optParameters = [
        [
            "rate",
            None,
            EchoPolicy.rate,
            "Replies/s per source address (0: unlimited).",
            numberOption("rate", low=0, zeroMeansNone=True),
        ],
        [
            "burst",
            None,
            EchoPolicy.burst,
            "Replies a source may get at once.",
            numberOption("burst", low=0, zeroMeansNone=True),
        ],
        [
            "global-rate",
            None,
            EchoPolicy.globalRate,
            "Replies/s in total (0: unlimited).",
            numberOption("global-rate", low=0, zeroMeansNone=True),
        ],
    ]

    def opt_allow_source_port(self, value: str) -> None:
        """Answer this source port although it is on the deny list (repeatable)."""
        port = checkPort(value, "--allow-source-port")
        self.setdefault("allow-source-port", set()).add(port)

    def policy(self) -> EchoPolicy:
        denied = EchoPolicy.deniedSourcePorts - self.get("allow-source-port", set())
        return EchoPolicy(
            rate=self["rate"],
            burst=self["burst"] or EchoPolicy.burst,
            globalRate=self["global-rate"],
            deniedSourcePorts=frozenset(denied),
        )


def makeService(options: Options, reactor: Any = None) -> EchoService:
    """Build the echo service from parsed L{Options}."""
    return EchoService(
        port=options["port"],
        interface=options["interface"],
        policy=options.policy(),
        tcp=not options["no-tcp"],
        reactor=reactor,
    )


SPEC = ServiceSpec("echo", "RFC 862 echo, UDP and TCP on the same port", Options, makeService)
