"""
The responder service (C{twistd -n udpsuite responder}) and its options.

Under C{twistd -n udpsuite} with no subcommand the responder starts with
the other services and describes them: L{tap} hands the responder's options
every selected service through L{Options.describeSiblings}.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import usage

from twisted_udpsuite import ports
from twisted_udpsuite.discovery.interfaces import broadcastInterfaces, directedBroadcasts
from twisted_udpsuite.discovery.protocol import MAX_DATAGRAM, Responder
from twisted_udpsuite.discovery.wire import MAX_NAME, ServiceEntry
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    ServiceOptions,
    ServiceSpec,
    numberOption,
)

__all__ = ["Options", "ResponderService", "SPEC", "makeService", "parseServiceEntry"]


class ResponderService(ListeningService):
    """
    A L{Responder} on one UDP port.

    Bind it to all interfaces (C{""}, the default) to hear broadcast probes:
    a socket bound to one unicast address only ever hears probes sent to
    that address.

    @param announceInterval: seconds between announces (C{None}: never).
    @param announceTargets: where announces go; by default the limited
        broadcast and every interface's directed broadcast, on C{port}.
    """

    def __init__(
        self,
        name: str,
        services: Iterable[ServiceEntry] = (),
        port: int = ports.RESPONDER,
        interface: str = "",
        reactor: IReactorNetwork | None = None,
        *,
        rate: float = 1.0,
        burst: float = 4,
        announceInterval: float | None = None,
        announceTargets: Sequence[tuple[str, int]] | None = None,
        responder: Responder | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self._announceTargets = announceTargets
        self.responder = responder or Responder(
            name,
            services,
            reactor,
            rate=rate,
            burst=burst,
            announceInterval=announceInterval,
        )
        offering = " ".join(map(str, self.responder.services)) or "nothing"
        listener = Listener(
            "responder",
            "udp",
            port,
            self.responder,
            interface,
            MAX_DATAGRAM,
            label=f"responder {self.responder.name!r}",
            detail=f", offering {offering}",
        )
        super().__init__([listener], reactor)

    @property
    def udpPort(self) -> Any:
        """The bound port, once started."""
        return self.portOf(0)

    def listen(self) -> None:
        responder = self.responder
        if responder.announceInterval and not responder.announceTargets:
            if self._announceTargets is not None:
                targets = list(self._announceTargets)
            else:
                addresses = ["255.255.255.255"] + directedBroadcasts(
                    [i for _, i in broadcastInterfaces()]
                )
                targets = [(a, self.port) for a in addresses]
            responder.announceTargets = targets
        super().listen()

    def startedListening(self) -> None:
        if self.interface not in ("", "::"):
            self.log.warn(
                "bound to {interface}: only probes sent to that address are heard, "
                "not broadcasts (use --interface '' for those)",
                interface=self.interface,
            )

    def unbind(self) -> Deferred[Any]:
        if self.udpPort is not None:
            self.responder.stopAnnouncing()  # goodbye while the socket still works
        return super().unbind()


_SERVICE = re.compile(r"^([^/\s]{1,32})/(udp|tcp):(\d{1,5})$")


def parseServiceEntry(text: str) -> ServiceEntry:
    """C{NAME/udp:PORT} or C{NAME/tcp:PORT}, as a L{ServiceEntry}."""
    match = _SERVICE.match(text)
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise usage.UsageError(f"--service: {text!r} is not NAME/udp:PORT or NAME/tcp:PORT")
    return ServiceEntry(match.group(1), match.group(2), int(match.group(3)))


class Options(ServiceOptions):
    """C{twistd -n udpsuite responder}: answer discovery probes."""

    defaultPort = ports.RESPONDER
    optParameters = [
        ["rate", None, 1.0, "Answers/s per source address.", numberOption("rate", low=0)],
        ["burst", None, 4.0, "Answers a source may get at once.", numberOption("burst", low=0)],
        [
            "announce",
            None,
            0.0,
            "Announce every S seconds (0: never).",
            numberOption("announce", low=0),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["name"] = socket.gethostname()[:MAX_NAME] or "udpsuite"
        self["services"] = []

    def opt_name(self, value: str) -> None:
        """Name shown to discoverers (default: the host name)."""
        if not value.strip() or len(value.encode("utf-8")) > MAX_NAME:
            raise usage.UsageError(f"--name: must be 1 to {MAX_NAME} bytes of UTF-8")
        self["name"] = value

    opt_n = opt_name

    def opt_service(self, value: str) -> None:
        """Describe a service: NAME/udp:PORT or NAME/tcp:PORT (repeatable)."""
        self["services"].append(parseServiceEntry(value))

    def postOptions(self) -> None:
        if self["rate"] <= 0 or self["burst"] < 1:
            raise usage.UsageError("--rate must be above 0 and --burst at least 1")

    def describeSiblings(self, selected: Iterable[tuple[ServiceSpec, usage.Options]]) -> None:
        """
        Describe the other services started in the same process (tap's hook): what
        each one's L{ServiceSpec.offers} says, on the ports its options give.
        """
        for spec, options in selected:
            if options is self:
                continue
            for name, transport, port in spec.offered(options):
                entry = ServiceEntry(name, transport, port)
                if entry not in self["services"]:
                    self["services"].append(entry)


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> ResponderService:
    """Build the responder service from parsed L{Options}."""
    return ResponderService(
        options["name"],
        options["services"],
        port=options["port"],
        interface=options["interface"],
        reactor=reactor,
        rate=options["rate"],
        burst=options["burst"],
        announceInterval=options["announce"] or None,
    )


SPEC = ServiceSpec("responder", "Answers LAN discovery probes", Options, makeService)
