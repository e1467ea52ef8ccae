"""
What every suite service shares: the C{--port}/C{--interface} options, the
L{ServiceSpec} through which a protocol adds itself to C{twistd -n udpsuite}
(see L{twisted_udpsuite.tap}), and L{ListeningService}, which binds its ports
while twistd still has the privileges to (port 69 with C{--uid}).

The checks of option values (L{checkPort}, L{checkInterface}, L{numberOption}) live in
L{twisted_udpsuite.optionvalues} and are re-exported here for the services' options: the
C{udpsuite} commands use them too, without importing this module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred
from twisted.internet.fdesc import setNonBlocking
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from twisted_udpsuite.activation import describe
from twisted_udpsuite.drain import DEFAULT_DRAIN, IDrainable
from twisted_udpsuite.localaddress import adoptDatagramPort, listenUDP
from twisted_udpsuite.optionvalues import checkInterface as checkInterface
from twisted_udpsuite.optionvalues import checkPort as checkPort
from twisted_udpsuite.optionvalues import numberOption as numberOption
from twisted_udpsuite.reactors import IReactorNetwork

TCP_BACKLOG = 1024
"""
Connections a TCP listener's kernel queue holds before they are accepted. Twisted's
default is 50: a burst of more clients at once (a lab's machines fetching one image, a
script's parallel downloads) overflows it, and each dropped handshake waits out a SYN
retransmission (a second) before it connects. Linux caps it at C{net.core.somaxconn}.
A socket handed over by systemd or inetd keeps the backlog they gave it.
"""


class ServiceOptions(usage.Options):
    """
    Base for each service's options: C{--port} and C{--interface}.

    Subclasses set L{defaultPort} and add their own options.  C{--interface}
    defaults to all IPv4 interfaces (C{''}).
    """

    defaultPort: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["port"] = self.defaultPort
        self["interface"] = ""

    def opt_port(self, value: str) -> None:
        """Port number to listen on (0: any free port)."""
        self["port"] = checkPort(value)

    opt_p = opt_port

    def opt_interface(self, value: str) -> None:
        """Address to bind: '' all IPv4 (default), '::' all IPv4+IPv6, or one address."""
        self["interface"] = checkInterface(value)

    opt_i = opt_interface


class ServedRootOptions(ServiceOptions):
    """L{ServiceOptions} of a service that serves a directory: C{--root}, by default the
    current directory (TFTP, files)."""

    def __init__(self) -> None:
        super().__init__()
        self["root"] = FilePath(os.getcwd())

    def opt_root(self, value: str) -> None:
        """Directory to serve (default: the current directory)."""
        path = FilePath(os.path.abspath(value))
        if not path.isdir():
            raise usage.UsageError(f"--root: {value!r} is not a directory")
        self["root"] = path


@dataclass(frozen=True)
class Offer:
    """
    A port a service offers to its LAN, as discovery advertises it
    (C{name/transport:port}).

    @ivar name: the name advertised (C{"echo"}, C{"http"}).
    @ivar transport: C{"udp"} or C{"tcp"}.
    @ivar portOption: the service's option holding the port number.
    """

    name: str
    transport: str
    portOption: str = "port"


@dataclass(frozen=True)
class ServiceSpec:
    """
    One C{twistd -n udpsuite} subcommand.

    @ivar makeService: C{makeService(options, reactor)} returning the
        (not yet started) service; C{reactor} is the one to listen on.
    @ivar startsByDefault: whether a plain C{twistd -n udpsuite} (no
        subcommand) starts it too.
    @ivar offers: the ports a discovery responder started beside it advertises
        (none by default: a service says what it offers, on which transport).
    """

    name: str
    description: str
    options: type[ServiceOptions]
    makeService: Callable[[Any, Any], IService]
    startsByDefault: bool = True
    offers: tuple[Offer, ...] = ()

    def offered(self, options: usage.Options) -> list[tuple[str, str, int]]:
        """
        C{(name, transport, port)} for each of L{offers} that C{options} give a port:
        an option left unset (C{None}) or 0 (any free port, not known yet) offers none.
        """
        ports = [(offer, options.get(offer.portOption)) for offer in self.offers]
        return [(offer.name, offer.transport, port) for offer, port in ports if port]


@dataclass
class Listener:
    """
    One socket a L{ListeningService} listens on.

    @ivar name: what the socket is for, in logs and for socket activation
        (L{twisted_udpsuite.activation}): C{"echo"}, C{"tftp"}, C{"files-http"}.
    @ivar transport: C{"udp"} or C{"tcp"}.
    @ivar port: the port number to bind (0: any free port).
    @ivar protocol: the datagram protocol (UDP) or the protocol factory (TCP).
    @ivar followsPrevious: with C{port} 0, take the number the previous
        listener was given (echo's TCP port shares its UDP port's number).
    @ivar label: what the "listening" log line calls it (the name by default).
    @ivar detail: added to the "listening" log line (C{", serving /srv/tftp"}).
    @ivar inherited: a descriptor of a socket bound by someone else (systemd,
        inetd) to adopt instead of binding; left open, so a restart adopts it again.
    @ivar listening: the port, while bound.
    """

    name: str
    transport: str
    port: int
    protocol: Any
    interface: str = ""
    maxPacketSize: int = 8192
    followsPrevious: bool = False
    label: str = ""
    detail: str = ""
    inherited: int | None = None
    listening: Any = field(default=None, compare=False)


class ListeningService(Service):
    """
    A service that listens on its L{Listener}s: the suite's one way to bind.

    The ports are bound in L{privilegedStartService}, which twistd calls before
    it gives up root for C{--uid}/C{--gid} (so port 69 works), or in
    L{startService} when nothing called that first (a library user).  If one
    cannot be bound, those already bound are closed again before the error
    (L{twisted.internet.error.CannotListenError}) is raised.  Each bound port
    is logged in one "listening" line.  L{stopService} drains (L{IDrainable})
    for up to L{drainTimeout} and then closes every port, and its Deferred fires
    when all are closed.

    @ivar listeners: the sockets, bound in this order.
    """

    log = Logger(namespace="twisted_udpsuite")

    #: Seconds L{stopService} lets running work finish (L{IDrainable}) before cutting it.
    drainTimeout: float = DEFAULT_DRAIN

    def __init__(self, listeners: Sequence[Listener], reactor: IReactorNetwork) -> None:
        self.listeners = list(listeners)
        self._reactor = reactor

    def portOf(self, index: int) -> Any:
        """The port of listener C{index} while bound, else (or if there is none) C{None}."""
        return self.listeners[index].listening if index < len(self.listeners) else None

    @property
    def bound(self) -> bool:
        """Whether the ports are bound."""
        return any(listener.listening is not None for listener in self.listeners)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self.listen()

    def startService(self) -> None:
        if not self.bound:
            self.listen()
        super().startService()  # type: ignore[no-untyped-call]

    def listen(self) -> None:
        """Bind (or adopt) every listener's socket, all or none."""
        previous: int | None = None
        try:
            for listener in self.listeners:
                port = listener.port
                if port == 0 and listener.followsPrevious and previous is not None:
                    port = previous
                listener.listening = self._listenOne(listener, port)
                previous = listener.listening.getHost().port
        except BaseException:
            self.unbind()
            raise
        for listener in self.listeners:
            self.log.info(
                "{name} listening on {interface}:{port} ({transport}{how}){detail}",
                name=listener.label or listener.name,
                interface=_hostText(listener.listening.getHost().host),
                port=listener.listening.getHost().port,
                transport=listener.transport.upper(),
                how=", inherited" if listener.inherited is not None else "",
                detail=listener.detail,
            )
        self.startedListening()

    def _listenOne(self, listener: Listener, port: int) -> Any:
        reactor, fd = self._reactor, listener.inherited
        if fd is not None:
            # The reactor's to adopt (systemd and inetd hand them blocking).
            setNonBlocking(fd)  # type: ignore[no-untyped-call]
        if listener.transport == "udp":
            if fd is not None:
                # systemd's Broadcast=yes (or an inetd) may hand the socket over with
                # SO_BROADCAST; no answering socket of the suite holds it (a protocol
                # that broadcasts sets it for the moment it needs it).
                with socket.socket(fileno=os.dup(fd)) as inherited:
                    inherited.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)
                family = describe(fd).family
                return adoptDatagramPort(
                    reactor, fd, family, listener.protocol, listener.maxPacketSize
                )
            return listenUDP(
                reactor, port, listener.protocol, listener.interface, listener.maxPacketSize
            )
        if fd is not None:
            # Twisted's hint says AddressFamily; it takes any int (and refuses a bad one).
            family = describe(fd).family
            return reactor.adoptStreamPort(fd, family, listener.protocol)  # type: ignore[arg-type]
        return reactor.listenTCP(
            port, listener.protocol, backlog=TCP_BACKLOG, interface=listener.interface
        )

    def startedListening(self) -> None:
        """Called once every port is bound; subclasses may log more or start work."""

    def unbind(self) -> Deferred[Any]:
        """Close every bound port; fires when all are closed."""
        waits = []
        for listener in self.listeners:
            port, listener.listening = listener.listening, None
            if port is not None:
                waits.append(maybeDeferred(port.stopListening))
        return gatherResults(waits)

    def drain(self, timeout: float) -> Deferred[Any]:
        """Let each listener's L{IDrainable} protocol finish its work (before the ports close)."""
        return gatherResults(
            [
                maybeDeferred(IDrainable(listener.protocol).drain, timeout)
                for listener in self.listeners
                if IDrainable.providedBy(listener.protocol)
            ],
            consumeErrors=True,
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]

        def drained(result: object) -> Deferred[Any]:
            if isinstance(result, Failure):
                if isinstance(result.value, FirstError):
                    result = result.value.subFailure
                self.log.failure("while draining", result)
            return self.unbind()

        return self.drain(self.drainTimeout).addBoth(drained)


def _hostText(host: str) -> str:
    return host if host not in ("0.0.0.0", "") else "*"
