"""
The echo service: UDP and TCP echo on one port number, and its twistd options.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IListeningPort, IUDPTransport

from twisted_udpsuite import ports
from twisted_udpsuite.echo.server import (
    MAX_DATAGRAM,
    EchoPolicy,
    EchoStats,
    TCPEchoFactory,
    UDPEchoProtocol,
)
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    Offer,
    ServiceOptions,
    ServiceSpec,
    checkPort,
    numberOption,
)

__all__ = ["EchoService", "Options", "makeService", "SPEC"]


class EchoService(ListeningService):
    """
    RFC 862 echo on UDP and TCP, bound to the same port number.

    With C{port=0} the UDP port is chosen first and TCP takes the same
    number.  Starting raises C{twisted.internet.error.CannotListenError}
    if either port cannot be bound (and leaves neither bound).

    @ivar stats: the L{EchoStats} both sides update.
    """

    def __init__(
        self,
        port: int = ports.ECHO,
        interface: str = "",
        policy: EchoPolicy | None = None,
        tcp: bool = True,
        reactor: IReactorNetwork | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.stats = EchoStats()
        self.udpProtocol = UDPEchoProtocol(reactor, policy, self.stats)
        self.tcpFactory = TCPEchoFactory(reactor, self.stats) if tcp else None
        listeners = [Listener("echo", "udp", port, self.udpProtocol, interface, MAX_DATAGRAM)]
        if self.tcpFactory is not None:
            listeners.append(
                Listener("echo", "tcp", port, self.tcpFactory, interface, followsPrevious=True)
            )
        super().__init__(listeners, reactor)

    @property
    def udpPort(self) -> IUDPTransport | None:
        """The bound UDP port, once started."""
        return cast("IUDPTransport | None", self.portOf(0))

    @property
    def tcpPort(self) -> IListeningPort | None:
        """The bound TCP port, once started (C{None} with C{tcp=False})."""
        return cast("IListeningPort | None", self.portOf(1))


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


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> EchoService:
    """Build the echo service from parsed L{Options}."""
    return EchoService(
        port=options["port"],
        interface=options["interface"],
        policy=options.policy(),
        tcp=not options["no-tcp"],
        reactor=reactor,
    )


SPEC = ServiceSpec(
    "echo",
    "RFC 862 echo, UDP and TCP on the same port",
    Options,
    makeService,
    offers=(Offer("echo", "udp"), Offer("echo", "tcp")),
)
