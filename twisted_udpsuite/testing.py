"""
An in-memory datagram network for testing C{DatagramProtocol}s without sockets.

Twisted ships in-memory TCP helpers (L{twisted.internet.testing},
L{twisted.test.iosim}) but nothing for UDP.  This module fills that gap.  A
L{MemoryNetwork} holds hosts (L{MemoryHost}), each with its own interfaces and
a loopback; protocols listen on a host exactly as they would on a reactor
(C{host.listenUDP(port, protocol, interface=...)}), and datagrams travel when
the test moves the network's clock.  Everything is deterministic: the faults
(loss, duplication, reordering, truncation) come from a seeded RNG, time only
moves when the test says so, and every datagram is recorded for assertions.

Typical use::

    net = MemoryNetwork(seed=1, loss=0.2)
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server.listenUDP(7, EchoProtocol(reactor=server))
    d = ping(client, ("192.0.2.1", 7), count=10)
    result = net.runUntil(d)          # steps time event by event
    assert net.clock.getDelayedCalls() == []

Routing follows Linux where it matters to protocol code: a socket bound to a
wildcard address (C{""} or C{"::"}) receives unicast and broadcast datagrams
for its port; a socket bound to one unicast address never sees broadcasts;
sending to a broadcast address needs C{setBroadcastAllowed(True)} (else
C{PermissionError}, as C{EACCES}); the sender receives its own broadcast when
it listens on that port; multicast reaches the sockets on the link that
joined the group (C{listenMulticast}, C{joinGroup}; the all-nodes groups
C{224.0.0.1} and C{ff02::1} need no join), the sender's own host included
unless its loopback mode is off; an IPv6 wildcard socket also receives IPv4 datagrams,
from a V4-mapped source address (C{"::ffff:192.0.2.2"}); a datagram longer
than the receiver's C{maxPacketSize} is cut short silently, like C{recvfrom}.
A protocol providing L{twisted_udpsuite.localaddress.ILocalAddressReceiver} is told
each datagram's local address, as Linux's packet info tells it. A port also takes the
socket calls a sender makes itself (C{sendto}, C{sendmsg} with packet info or a GSO
batch, C{getsockopt}/C{setsockopt} for C{UDP_SEGMENT}, C{UDP_GRO} and C{SO_RCVBUF}),
answered as Linux answers them; see L{MemoryHost} for the kernel knobs.

Exceptions raised by C{datagramReceived} are not swallowed (the real reactor
would log and drop them): a test that crashes a protocol sees the crash.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IMulticastTransport,
    IReactorMulticast,
    IUDPTransport,
)
from twisted.internet.protocol import AbstractDatagramProtocol, DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite.localaddress import IP_PKTINFO, ILocalAddressReceiver
from twisted_udpsuite.reactors import IReactorUDPTime
from twisted_udpsuite.tftp.batching import MAX_SEGMENTS, UDP_GRO, UDP_SEGMENT
from twisted_udpsuite.twistedprivate import earliestCall, popDueCall
from twisted_udpsuite.unreachable import IUnreachableReceiver

__all__ = [
    "DatagramRecord",
    "EventClock",
    "MemoryHost",
    "MemoryMulticastPort",
    "MemoryNetwork",
    "MemoryUDPPort",
]

Address = tuple[str, int]
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

_MAX_PAYLOAD = {4: 65507, 6: 65527}
_FIRST_EPHEMERAL_PORT = 32768
_LAST_PORT = 65535


class EventClock(Clock):
    """
    A L{Clock} whose C{advance} steps from one scheduled call to the next.

    L{Clock.advance} jumps to the end time first and only then runs what is
    due, so a timer set by a call at t=0 for one second later would land one
    second after the I{end}.  Here every call runs with C{seconds()} equal to
    its own scheduled time, which is what a retransmission timer racing a
    delayed datagram needs.
    """

    def advance(self, amount: float) -> None:
        end = self.rightNow + amount
        while (call := popDueCall(self, end)) is not None:
            self.rightNow = max(self.rightNow, call.getTime())
            call.called = 1
            call.func(*call.args, **call.kw)
        self.rightNow = end

    def nextCallTime(self) -> float | None:
        """When the next scheduled call is due, or C{None} if nothing is."""
        call = earliestCall(self)
        return None if call is None else call.getTime()


@dataclass
class DatagramRecord:
    """
    One datagram sent on a L{MemoryNetwork}.

    @ivar fate: what became of it: C{"in flight"} until it is due, then
        C{"delivered"}, C{"truncated"} (delivered cut to the network's
        C{maxDatagramSize}), C{"unreachable"} (nobody listening), or, decided
        at send time, C{"lost"} (random loss) or C{"blocked"} (a drop rule).
    @ivar duplicate: true for the extra copy made by random duplication.
    @ivar broadcast: true when it was sent to a broadcast or multicast address.
    @ivar receivers: how many sockets got it (more than one for broadcast).
    """

    time: float
    source: Address
    destination: Address
    data: bytes
    fate: str = "in flight"
    duplicate: bool = False
    broadcast: bool = False
    receivers: int = 0


def _ipVersion(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return None


def _mappedV4(address: str) -> str | None:
    """The IPv4 address inside a V4-mapped IPv6 address, else C{None}."""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else None


@implementer(IUDPTransport, IListeningPort)
class MemoryUDPPort:
    """
    A bound UDP socket on a L{MemoryHost}: the transport its protocol writes to.

    It provides L{IUDPTransport} and behaves like L{twisted.internet.udp.Port}
    in the ways protocols can observe: hostnames are refused, an IPv4 socket
    cannot write to IPv6 addresses (nor the reverse; an IPv6 socket reaches
    IPv4 peers through V4-mapped addresses), oversized datagrams raise
    L{error.MessageLengthError}, and a connected socket hears
    C{connectionRefused} when its peer has no listener.
    """

    def __init__(
        self,
        host: MemoryHost,
        interface: str,
        port: int,
        protocol: AbstractDatagramProtocol,
        maxPacketSize: int,
    ) -> None:
        self.host = host
        self.interface = interface
        self.port = port
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.family = 6 if ":" in interface else 4
        self.connected: Address | None = None
        self.listening = True
        self.reuse = False
        self.reportsUnreachable = False
        """As Linux's C{IP_RECVERR}: an unreachable destination is reported, unconnected too
        (L{twisted_udpsuite.unreachable.IUnreachableReceiver})."""
        self._broadcastAllowed = False
        self._source: str | None = None  # writeFrom's address, for the datagram being sent
        self.segmentedSends = 0
        """GSO batches sent with L{sendmsg}."""
        self.receiveBuffer = 212992  # Linux's default net.core.rmem_default
        self.coalescing = False

    # IUDPTransport

    def write(self, packet: bytes, addr: Address | None = None) -> None:
        if not self.listening:
            raise error.NotListeningError("write() on a port that stopped listening")
        if self.connected is not None:
            if addr not in (None, self.connected):
                raise ValueError("a connected port writes only to its peer")
            addr = self.connected
        if addr is None:
            raise ValueError("write() needs an address on an unconnected port")
        destination = (addr[0], addr[1])
        version = _ipVersion(destination[0])
        if version is None and destination[0] != "<broadcast>":
            raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                destination[0], "write() only accepts IP addresses, not hostnames"
            )
        if self.family == 6 and version != 6:
            raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                destination[0], "IPv6 port write() called with IPv4 or broadcast address"
            )
        if self.family == 4 and version == 6:
            raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                destination[0], "IPv4 port write() called with IPv6 address"
            )
        if len(packet) > _MAX_PAYLOAD[self.family]:
            raise error.MessageLengthError("message too long")
        self.host.network._send(self, bytes(packet), destination)

    def writeSequence(self, seq: Iterable[bytes], addr: Address | None = None) -> None:
        self.write(b"".join(seq), addr)

    def writeFrom(self, packet: bytes, addr: Address, local: str) -> None:
        """
        Like C{write}, from the local address C{local} (one of the host's, as Linux's packet
        info sets it): see L{twisted_udpsuite.localaddress.writeFrom}.
        """
        address = _mappedV4(local) or local.split("%", 1)[0]
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or self.host.ownsAddress(ip)):
            raise OSError(errno.EINVAL, "Invalid argument (not a local address)")
        self._source = address
        try:
            self.write(packet, addr)
        finally:
            self._source = None

    # The socket calls a sender may make itself (twisted_udpsuite.tftp.batching), as Linux
    # answers them: OSError, never Twisted's errors.

    def sendto(self, data: bytes, addr: Address) -> int:
        self._sendAs(data, addr, None)
        return len(data)

    def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[tuple[int, int, bytes]] = (),
        flags: int = 0,
        address: Address | None = None,
    ) -> int:
        """
        C{socket.sendmsg}: the buffers are one datagram, or, with a C{UDP_SEGMENT} control
        message, a GSO batch cut into datagrams of that size (the last may be shorter),
        each its own L{DatagramRecord}. A host without C{segmentationOffload} refuses a
        batch with C{EIO}, as a device that cannot segment does. Packet info
        (C{IP_PKTINFO}, C{IPV6_PKTINFO}) sets the source address, as L{writeFrom}.
        """
        data = b"".join(buffers)
        source: str | None = None
        segment = 0
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                source = socket.inet_ntop(socket.AF_INET, value[4:8])
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                source = socket.inet_ntop(socket.AF_INET6, value[:16])
            elif level == socket.IPPROTO_UDP and kind == UDP_SEGMENT:
                (segment,) = struct.unpack("@H", value)
            else:
                raise OSError(errno.EINVAL, "Invalid argument (unknown control message)")
        if segment and len(data) > segment:
            if not self.host.segmentationOffload:
                raise OSError(errno.EIO, "Input/output error (cannot segment)")
            if len(data) > segment * MAX_SEGMENTS:
                raise OSError(errno.EINVAL, "Invalid argument (too many segments)")
            if len(data) > _MAX_PAYLOAD[4]:
                raise OSError(errno.EMSGSIZE, "Message too long")
            self.segmentedSends += 1
            self.host.segmentedSends += 1
            for start in range(0, len(data), segment):
                self._sendAs(data[start : start + segment], address, source)
        else:
            self._sendAs(data, address, source)
        return len(data)

    def _sendAs(self, data: bytes, addr: Address | None, source: str | None) -> None:
        try:
            if source is None:
                self.write(data, addr)
            else:
                self.writeFrom(data, addr, source)  # type: ignore[arg-type]
        except error.MessageLengthError as e:
            raise OSError(errno.EMSGSIZE, str(e)) from None
        except error.NotListeningError as e:
            raise OSError(errno.EBADF, str(e)) from None

    def getsockopt(self, level: int, option: int) -> int:
        """C{UDP_SEGMENT} (0, or C{ENOPROTOOPT} on a host without it) and C{SO_RCVBUF}."""
        if (level, option) == (socket.IPPROTO_UDP, UDP_SEGMENT):
            if not self.host.segmentationOption:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            return 0
        if (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF):
            return self.receiveBuffer
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """
        As Linux: C{SO_RCVBUF} gets twice the value, up to twice the host's C{rmemMax};
        C{SO_RCVBUFFORCE} (33) past it only where the host C{mayForce} (root); C{UDP_GRO}
        is recorded (C{coalescing}: datagrams are still delivered one at a time).
        """
        if (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF):
            self.receiveBuffer = 2 * min(value, self.host.rmemMax)
        elif (level, option) == (socket.SOL_SOCKET, 33):
            if not self.host.mayForce:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            self.receiveBuffer = 2 * value
        elif (level, option) == (socket.IPPROTO_UDP, UDP_GRO):
            if not self.host.segmentationOption:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            self.coalescing = bool(value)
        elif (level, option) != (socket.SOL_SOCKET, socket.SO_SNDBUF):
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def connect(self, host: str, port: int) -> None:
        if self.connected is not None:
            raise RuntimeError("already connected, reconnecting is not currently supported")
        if _ipVersion(host) is None:
            raise error.InvalidAddressError(host, "not an IPv4 or IPv6 address")  # type: ignore[no-untyped-call]
        self.connected = (host, port)

    def getHost(self) -> IPv4Address | IPv6Address:
        if self.family == 6:
            return IPv6Address("UDP", self.interface or "::", self.port)
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def startListening(self) -> None:
        """Nothing to do: a port is bound, and listening, from the start."""

    def stopListening(self) -> Deferred[None]:
        if self.listening:
            self.listening = False
            self.host._unbind(self)
            self.protocol.doStop()  # type: ignore[no-untyped-call]
        return succeed(None)

    loseConnection = stopListening

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self._broadcastAllowed = bool(enabled)

    def getBroadcastAllowed(self) -> bool:
        return self._broadcastAllowed

    def logPrefix(self) -> str:
        return f"MemoryUDPPort({self.interface or '*'}:{self.port})"

    # Routing helpers

    @property
    def isWildcard(self) -> bool:
        return self.interface in ("", "0.0.0.0", "::")

    def accepts(self, destination: IPAddress) -> bool:
        """Whether a unicast datagram to C{destination} on my port is mine."""
        if self.isWildcard:
            return destination.version == self.family or (
                self.family == 6 and destination.version == 4
            )
        return ipaddress.ip_address(_mappedV4(self.interface) or self.interface) == destination


#: Groups every host's interfaces belong to: no join needed to hear them.
_ALL_NODES = {ipaddress.ip_address("224.0.0.1"), ipaddress.ip_address("ff02::1")}


@implementer(IMulticastTransport)
class MemoryMulticastPort(MemoryUDPPort):
    """
    A socket from C{listenMulticast}: a L{MemoryUDPPort} that can join
    groups.  It hears a group's datagrams once joined (the all-nodes groups
    C{224.0.0.1} and C{ff02::1} always), and by default hears its own host's
    multicast too (C{IP_MULTICAST_LOOP}, on by default on Linux).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups: set[IPAddress] = set()
        self._loopback = True
        self._ttl = 1
        self._outgoing: str | int = ""

    def joinGroup(self, addr: str, interface: str = "") -> Deferred[None]:
        try:
            group = ipaddress.ip_address(addr)
        except ValueError:
            group = None
        if group is None or not group.is_multicast:
            return fail(error.MulticastJoinError(addr, interface, "not a multicast address"))
        self.groups.add(group)
        return succeed(None)

    def leaveGroup(self, addr: str, interface: str = "") -> Deferred[None]:
        self.groups.discard(ipaddress.ip_address(addr))
        return succeed(None)

    def getOutgoingInterface(self) -> str | int:
        return self._outgoing

    def setOutgoingInterface(self, addr: str | int) -> Deferred[int]:
        self._outgoing = addr
        return succeed(1)

    def getLoopbackMode(self) -> bool:
        return self._loopback

    def setLoopbackMode(self, mode: bool) -> None:
        self._loopback = bool(mode)

    def getTTL(self) -> int:
        return self._ttl

    def setTTL(self, ttl: int) -> None:
        self._ttl = ttl

    def hears(self, group: IPAddress) -> bool:
        return group in self.groups or group in _ALL_NODES


@implementer(IReactorUDPTime, IReactorMulticast)
class MemoryHost(MemoryReactor):
    """
    One machine on a L{MemoryNetwork}: a reactor for UDP, TCP and time.

    Hand it to protocols as their C{reactor}.  UDP goes over the network; TCP
    calls are only recorded, as by L{MemoryReactor} (drive TCP protocols with
    L{twisted.internet.testing.StringTransport} or L{twisted.test.iosim});
    time is the network's shared L{EventClock}.

    @ivar interfaces: the host's addresses with their prefixes, loopback
        (C{127.0.0.1/8}, C{::1/128}) first.
    @ivar udpPorts: the bound sockets, by C{(interface, port)} (a view;
        sockets sharing a port through C{listenMultiple} show once).
    """

    def __init__(self, network: MemoryNetwork, interfaces: Iterable[IPInterface]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.network = network
        self.interfaces: list[IPInterface] = [
            ipaddress.ip_interface("127.0.0.1/8"),
            ipaddress.ip_interface("::1/128"),
            *interfaces,
        ]
        self.sockets: list[MemoryUDPPort] = []
        self._nextEphemeral = _FIRST_EPHEMERAL_PORT
        self.segmentationOption = True
        """Whether the kernel knows C{UDP_SEGMENT}/C{UDP_GRO} (Linux 4.18/5.0 on)."""
        self.segmentationOffload = True
        """Whether a GSO batch can be sent (else C{EIO}, as a device that cannot segment)."""
        self.rmemMax = 4194304
        """C{net.core.rmem_max}: the largest C{SO_RCVBUF} without C{SO_RCVBUFFORCE}."""
        self.mayForce = True
        """Whether C{SO_RCVBUFFORCE} is allowed (C{CAP_NET_ADMIN}: root)."""
        self.segmentedSends = 0
        """GSO batches sent from this host's ports (closed ones too)."""

    @property
    def udpPorts(self) -> dict[tuple[str, int], MemoryUDPPort]:
        return {(p.interface, p.port): p for p in self.sockets}

    @property
    def addresses(self) -> list[str]:
        """Every address of this host, loopback included, as text."""
        return [str(i.ip) for i in self.interfaces]

    # IReactorUDP

    def listenUDP(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
    ) -> MemoryUDPPort:
        return self._bind(MemoryUDPPort, port, protocol, interface, maxPacketSize, False)

    def listenMulticast(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> MemoryMulticastPort:
        """
        Bind a multicast-capable socket.  With C{listenMultiple}, several
        such sockets share the port (C{SO_REUSEADDR}): each gets its own copy
        of broadcast and multicast datagrams.
        """
        return self._bind(  # type: ignore[return-value]
            MemoryMulticastPort, port, protocol, interface, maxPacketSize, listenMultiple
        )

    def _bind(
        self,
        kind: type[MemoryUDPPort],
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str,
        maxPacketSize: int,
        reuse: bool,
    ) -> MemoryUDPPort:
        family = 6 if ":" in interface else 4
        address = _mappedV4(interface) or interface  # an IPv6 socket may bind V4-mapped
        if interface not in ("", "0.0.0.0", "::") and not any(
            str(i.ip) == address for i in self.interfaces
        ):
            raise error.CannotListenError(  # type: ignore[no-untyped-call]
                interface, port, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            )
        if port == 0:
            port = self._ephemeralPort(interface, family)
        elif self._conflicts(interface, port, family, reuse):
            raise error.CannotListenError(  # type: ignore[no-untyped-call]
                interface, port, OSError(errno.EADDRINUSE, "Address already in use")
            )
        udpPort = kind(self, interface, port, protocol, maxPacketSize)
        udpPort.reuse = reuse
        self.sockets.append(udpPort)
        protocol.makeConnection(udpPort)
        return udpPort

    def _conflicts(self, interface: str, port: int, family: int, reuse: bool = False) -> bool:
        for bound in self.sockets:
            if bound.port != port or (reuse and bound.reuse):
                continue
            # An IPv6 wildcard socket is dual-stack on Linux: it takes the
            # port for IPv4 too.
            if bound.family != family and not (
                (bound.family == 6 and bound.isWildcard) or (family == 6 and interface == "::")
            ):
                continue
            if bound.isWildcard or interface in ("", "0.0.0.0", "::"):
                return True
            if bound.interface == interface:
                return True
        return False

    def _ephemeralPort(self, interface: str, family: int) -> int:
        span = _LAST_PORT - _FIRST_EPHEMERAL_PORT + 1
        for _ in range(span):
            port = self._nextEphemeral
            self._nextEphemeral = port + 1 if port < _LAST_PORT else _FIRST_EPHEMERAL_PORT
            if not self._conflicts(interface, port, family):
                return port
        raise error.CannotListenError(interface, 0, OSError(errno.EADDRINUSE, "no free ports"))  # type: ignore[no-untyped-call]

    def _unbind(self, udpPort: MemoryUDPPort) -> None:
        if udpPort in self.sockets:
            self.sockets.remove(udpPort)

    # IReactorTime, shared with the whole network

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.network.clock.callLater(delay, callable, *args, **kw)

    def seconds(self) -> float:
        return self.network.clock.seconds()

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self.network.clock.getDelayedCalls()

    # Name resolution: IP literals and "localhost", as on a machine with no DNS.

    def resolve(self, name: str, timeout: Iterable[int] = (1, 3, 11, 45)) -> Deferred[str]:
        if _ipVersion(name) is not None:
            return succeed(name)
        if name == "localhost":
            return succeed("127.0.0.1")
        d: Deferred[str] = Deferred()
        d.errback(Failure(error.DNSLookupError(name)))  # type: ignore[no-untyped-call]
        return d

    # Routing helpers

    def ownsAddress(self, address: IPAddress) -> bool:
        return any(i.ip == address for i in self.interfaces)

    def sourceAddressFor(self, family: int, destination: IPAddress | None) -> str:
        """The address this host sends from to reach C{destination}, as Linux picks it."""
        candidates = [i for i in self.interfaces if i.version == family]
        if destination is not None:
            if destination.is_loopback:
                return "127.0.0.1" if family == 4 else "::1"
            for i in candidates:
                if not i.ip.is_loopback and destination in i.network:
                    return str(i.ip)
        for i in candidates:
            if not i.ip.is_loopback:
                return str(i.ip)
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


class MemoryNetwork:
    """
    A simulated IP network joining L{MemoryHost}s, with seeded faults.

    @param seed: seeds the RNG behind every fault, so a run repeats exactly.
    @param loss: the share of datagrams (0..1) dropped at random.
    @param duplicate: the share of datagrams delivered twice.
    @param reorder: the share of datagrams held back by C{reorderDelay}
        seconds, so that later ones overtake them.
    @param reorderDelay: how long a reordered datagram is held back.
    @param latency: one-way delay of every datagram, in seconds.
    @param maxDatagramSize: if set, longer datagrams arrive cut to this size
        (fate C{"truncated"}), like a path that truncates.

    @ivar datagrams: a L{DatagramRecord} for every datagram sent.
    @ivar rules: drop rules: callables given each L{DatagramRecord} before the
        random faults; one that returns true drops it (fate C{"blocked"}).
    @ivar clock: the L{EventClock} all hosts share.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorderDelay: float = 0.01,
        latency: float = 0.0,
        maxDatagramSize: int | None = None,
        clock: EventClock | None = None,
    ) -> None:
        for name, share in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {share!r}")
        self.random = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorderDelay = reorderDelay
        self.latency = latency
        self.maxDatagramSize = maxDatagramSize
        self.clock = clock if clock is not None else EventClock()
        self.hosts: list[MemoryHost] = []
        self.datagrams: list[DatagramRecord] = []
        self.rules: list[Callable[[DatagramRecord], bool]] = []

    def addHost(self, *interfaces: str) -> MemoryHost:
        """
        Add a host with the given addresses (C{"192.0.2.1/24"},
        C{"2001:db8::1/64"}; a bare address gets a host-only prefix).  Every
        host also has its own loopback, C{127.0.0.1/8} and C{::1}.
        """
        parsed = [ipaddress.ip_interface(i) for i in interfaces]
        for i in parsed:
            if any(h.ownsAddress(i.ip) for h in self.hosts):
                raise ValueError(f"{i.ip} already belongs to a host")
        host = MemoryHost(self, parsed)
        self.hosts.append(host)
        return host

    def dropIf(self, predicate: Callable[[DatagramRecord], bool]) -> Callable[[], None]:
        """Add a drop rule; returns a function that removes it again."""
        self.rules.append(predicate)
        return lambda: self.rules.remove(predicate)

    # Driving time

    def pump(self) -> None:
        """Deliver what is due now, and whatever that causes now, without moving time."""
        self.clock.advance(0)

    def advance(self, seconds: float) -> None:
        """Move time forward, running timers and deliveries in time order."""
        self.clock.advance(seconds)

    def runUntil(self, d: Deferred[T], timeout: float = 3600.0) -> T:
        """
        Step time event by event until C{d} has fired, then return its result
        (or raise its failure).

        @raise AssertionError: if nothing is left to happen, or C{timeout}
            simulated seconds pass, before C{d} fires.
        """
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        deadline = self.clock.seconds() + timeout
        self.pump()
        while not outcome:
            due = self.clock.nextCallTime()
            if due is None:
                raise AssertionError("the Deferred cannot fire: nothing is scheduled")
            if due > deadline:
                raise AssertionError(f"the Deferred did not fire within {timeout} seconds")
            self.clock.advance(due - self.clock.seconds())
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result  # type: ignore[no-any-return]

    # Routing

    def _findHost(self, address: IPAddress) -> MemoryHost | None:
        for host in self.hosts:
            if not address.is_loopback and host.ownsAddress(address):
                return host
        return None

    def _isBroadcast(self, address: IPAddress) -> bool:
        if address.version != 4:
            return False
        if address == ipaddress.IPv4Address("255.255.255.255"):
            return True
        return any(
            i.version == 4 and i.network.prefixlen < 31 and i.network.broadcast_address == address
            for host in self.hosts
            for i in host.interfaces
        )

    def _send(self, sender: MemoryUDPPort, data: bytes, destination: Address) -> None:
        host, port = destination
        if host == "<broadcast>":
            host = "255.255.255.255"
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        mapped = _mappedV4(host)
        family = 4 if mapped else ip.version
        target = ipaddress.ip_address(mapped) if mapped else ip
        broadcast = self._isBroadcast(target) or target.is_multicast
        if broadcast and not target.is_multicast and not sender.getBroadcastAllowed():
            raise PermissionError(errno.EACCES, "Permission denied (broadcast not allowed)")
        if sender._source is not None:
            sourceHost = sender._source
        elif sender.isWildcard:
            sourceHost = sender.host.sourceAddressFor(family, None if broadcast else target)
        elif sender.family == 6 and mapped:
            sourceHost = _mappedV4(sender.interface) or sender.host.sourceAddressFor(4, target)
        else:
            sourceHost = sender.interface
        if sender.family == 6 and family == 4:
            sourceHost = f"::ffff:{sourceHost}" if ":" not in sourceHost else sourceHost
        record = DatagramRecord(
            time=self.clock.seconds(),
            source=(sourceHost, sender.port),
            destination=(host, port),
            data=data,
            broadcast=broadcast,
        )
        self.datagrams.append(record)
        if any(rule(record) for rule in self.rules):
            record.fate = "blocked"
            return
        if self.loss and self.random.random() < self.loss:
            record.fate = "lost"
            return
        copies = [record]
        if self.duplicate and self.random.random() < self.duplicate:
            extra = DatagramRecord(
                record.time,
                record.source,
                record.destination,
                data,
                duplicate=True,
                broadcast=broadcast,
            )
            self.datagrams.append(extra)
            copies.append(extra)
        for copy in copies:
            delay = self.latency
            if self.reorder and self.random.random() < self.reorder:
                delay += self.reorderDelay
            self.clock.callLater(delay, self._deliver, sender, copy, target, family)

    def _deliver(
        self, sender: MemoryUDPPort, record: DatagramRecord, target: IPAddress, family: int
    ) -> None:
        data = record.data
        if self.maxDatagramSize is not None and len(data) > self.maxDatagramSize:
            data = data[: self.maxDatagramSize]
            record.fate = "truncated"
        else:
            record.fate = "delivered"
        port = record.destination[1]
        if target.is_multicast:
            receivers = self._multicastReceivers(sender, record.source[0], target, port)
        elif record.broadcast:
            receivers = self._broadcastReceivers(sender.host, record.source[0], port)
        else:
            receivers = self._unicastReceivers(sender.host, target, port)
        if not receivers:
            record.fate = "unreachable"
            if sender.connected is not None and sender.listening:
                # Only a DatagramProtocol can be connected (as with udp.Port).
                cast(DatagramProtocol, sender.protocol).connectionRefused()  # type: ignore[no-untyped-call]
            elif sender.reportsUnreachable and sender.listening:
                unreachable = IUnreachableReceiver(sender.protocol, None)
                if unreachable is not None:
                    unreachable.destinationUnreachable(record.destination)
            return
        record.receivers = len(receivers)
        sourceHost, sourcePort = record.source
        for receiver in receivers:
            source = sourceHost
            if receiver.family == 6 and family == 4 and ":" not in sourceHost:
                source = f"::ffff:{sourceHost}"
            elif receiver.family == 4 and ":" in sourceHost:
                source = _mappedV4(sourceHost) or sourceHost
            if receiver.connected is not None and receiver.connected != (source, sourcePort):
                continue
            payload = data[: receiver.maxPacketSize]
            wantsLocal = ILocalAddressReceiver(receiver.protocol, None)
            if wantsLocal is None:
                receiver.protocol.datagramReceived(payload, (source, sourcePort))
                continue
            local = None  # as the kernel's packet info: None for multicast
            if not target.is_multicast:
                local = str(target)
                if record.broadcast:  # the address answers would come from
                    sourceIP = ipaddress.ip_address(_mappedV4(sourceHost) or sourceHost)
                    local = receiver.host.sourceAddressFor(family, sourceIP)
                if receiver.family == 6 and family == 4:
                    local = f"::ffff:{local}"
            wantsLocal.datagramReceivedAt(payload, (source, sourcePort), local)

    def _unicastReceivers(
        self, senderHost: MemoryHost, target: IPAddress, port: int
    ) -> list[MemoryUDPPort]:
        host = senderHost if target.is_loopback else self._findHost(target)
        if host is None:
            return []
        specific = [p for p in host.sockets if p.port == port and not p.isWildcard]
        for p in specific:
            if p.accepts(target):
                return [p]
        return [p for p in host.sockets if p.port == port and p.accepts(target)][:1]

    def _broadcastReceivers(
        self, senderHost: MemoryHost, source: str, port: int
    ) -> list[MemoryUDPPort]:
        sourceIP = ipaddress.ip_address(_mappedV4(source) or source)
        receivers: list[MemoryUDPPort] = []
        for host in self.hosts:
            onLink = host is senderHost or any(
                i.version == 4 and not i.ip.is_loopback and sourceIP in i.network
                for i in host.interfaces
            )
            if not onLink:
                continue
            receivers.extend(
                p for p in host.sockets if p.port == port and p.isWildcard and p.listening
            )
        return receivers

    def _multicastReceivers(
        self, sender: MemoryUDPPort, source: str, group: IPAddress, port: int
    ) -> list[MemoryUDPPort]:
        """Sockets on the sender's link that listen on C{port} and hear C{group}."""
        sourceIP = ipaddress.ip_address(_mappedV4(source) or source)
        loop = not isinstance(sender, MemoryMulticastPort) or sender.getLoopbackMode()
        receivers: list[MemoryUDPPort] = []
        for host in self.hosts:
            if host is sender.host:
                if not loop:
                    continue
            elif not any(
                i.version == group.version and not i.ip.is_loopback and sourceIP in i.network
                for i in host.interfaces
            ):
                continue
            for p in host.sockets:
                if p.port != port or not p.listening or p.family != group.version:
                    continue
                if not (p.isWildcard or p.interface == str(group)):
                    continue
                if isinstance(p, MemoryMulticastPort) and p.hears(group):
                    receivers.append(p)
                elif group in _ALL_NODES:
                    receivers.append(p)
        return receivers
