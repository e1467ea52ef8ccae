"""
RFC 862 echo over UDP and TCP, safe to leave running.

UDP echo is a classic reflector: a forged datagram "from" another echo or
chargen port starts an endless loop, one sent to a broadcast address makes
every host answer (Fraggle).  L{UDPEchoProtocol} therefore refuses
broadcast/multicast/unspecified sources and a deny list of source ports,
caps replies per source and in total with token buckets, and only ever sends
back exactly what it received.  TCP echo follows the reader's pace (the
protocol is the transport's producer), so a client that never reads cannot
make it buffer without bound.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite import ports
from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.connections import IConnectionTransport, IdleTimeout, LimitedServerFactory
from twisted_udpsuite.localaddress import ILocalAddressReceiver, writeFrom
from twisted_udpsuite.ratelimit import PerSourceLimiter, TokenBucket
from twisted_udpsuite.reactors import reactorOr

__all__ = [
    "DEFAULT_DENIED_SOURCE_PORTS",
    "EchoPolicy",
    "EchoStats",
    "PeerCounters",
    "TCPEchoFactory",
    "TCPEchoProtocol",
    "UDPEchoProtocol",
]

#: Privileged ports (echo 7, chargen 19, DNS, NTP, ...), NFS and the suite's
#: own UDP services: replying to any of them can start a loop or hand
#: attacker-chosen bytes to a service that trusts its peer's port.
DEFAULT_DENIED_SOURCE_PORTS = frozenset(range(1024)) | {2049} | ports.SUITE_UDP_PORTS

#: The largest UDP payload (IPv4 65507, IPv6 65527) fits in this buffer, so
#: nothing is ever silently cut short by recvfrom.
MAX_DATAGRAM = 65536


@dataclass
class EchoPolicy:
    """
    The limits of an echo service.

    @ivar rate: replies per second allowed to one source address (C{None}:
        no per-source limit).
    @ivar burst: replies a source may get at once before C{rate} applies.
    @ivar globalRate: replies per second in total, whatever the source (the
        cap on forged sources spread over many addresses; C{None}: none).
    @ivar deniedSourcePorts: datagrams from these source ports are dropped.
    @ivar logRate: echo/drop log lines per second before they are folded
        into a count (keeps a flood from flooding the log too).
    """

    rate: float | None = 200.0
    burst: float = 400.0
    globalRate: float | None = 20000.0
    deniedSourcePorts: frozenset[int] = DEFAULT_DENIED_SOURCE_PORTS
    logRate: float = 20.0


@dataclass
class PeerCounters:
    """What one peer (by IP address) sent and got back."""

    datagrams: int = 0
    bytes: int = 0
    dropped: int = 0


@dataclass
class EchoStats:
    """
    Counters an embedding app can read at any time.

    @ivar echoed: datagrams (UDP) echoed in total.
    @ivar bytes: bytes echoed in total (UDP and TCP).
    @ivar dropped: datagrams not answered, by reason (C{"source-address"},
        C{"source-port"}, C{"rate"}, C{"global-rate"}, C{"send-error"}).
    @ivar peers: per-peer L{PeerCounters}, keyed by IP address.
    @ivar connections: TCP connections accepted in total.
    @ivar maxPeers: how many per-peer counters to keep (the least recently
        seen peer is forgotten first), so forged sources cannot grow it.
    """

    echoed: int = 0
    bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    peers: OrderedDict[str, PeerCounters] = field(default_factory=OrderedDict)
    connections: int = 0
    maxPeers: int = 4096

    def peer(self, host: str) -> PeerCounters:
        """The counters of C{host}, created (evicting the oldest) if new."""
        counters = self.peers.get(host)
        if counters is None:
            if len(self.peers) >= self.maxPeers:
                self.peers.popitem(last=False)
            counters = self.peers[host] = PeerCounters()
        else:
            self.peers.move_to_end(host)
        return counters


class _ThrottledLog:
    """Logs at most C{rate} lines a second and counts what it held back."""

    log = Logger(namespace="twisted_udpsuite.echo")

    def __init__(self, clock: IReactorTime, rate: float) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate, max(1.0, rate), clock.seconds())
        self.suppressed = 0

    def emit(self, method: str, fmt: str, **fields: Any) -> None:
        if not self._bucket.take(self._clock.seconds()):
            self.suppressed += 1
            return
        if self.suppressed:
            fields["suppressed"] = self.suppressed
            fmt += " ({suppressed} earlier lines not logged)"
            self.suppressed = 0
        getattr(self.log, method)(fmt, **fields)


@implementer(ILocalAddressReceiver)
class UDPEchoProtocol(DatagramProtocol):
    """
    RFC 862 UDP echo: each acceptable datagram goes back to its sender, unchanged.

    @param reactor: the clock for rate limits (C{None}: the global reactor).
    @param policy: the limits (default L{EchoPolicy}()).
    @param stats: counters to update, e.g. shared with a L{TCPEchoFactory}.
    @ivar stats: the L{EchoStats} being updated.
    """

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        policy: EchoPolicy | None = None,
        stats: EchoStats | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self._clock = reactor
        self.policy = policy if policy is not None else EchoPolicy()
        self.stats = stats if stats is not None else EchoStats()
        p = self.policy
        self._perSource = PerSourceLimiter(reactor, p.rate, p.burst) if p.rate is not None else None
        self._global = (
            TokenBucket(p.globalRate, p.globalRate, reactor.seconds())
            if p.globalRate is not None
            else None
        )
        self._log = _ThrottledLog(reactor, p.logRate)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.datagramReceivedAt(datagram, addr, None)

    def datagramReceivedAt(self, datagram: bytes, addr: tuple[str, int], local: str | None) -> None:
        """Echo from the address the datagram was sent to (L{ILocalAddressReceiver})."""
        port = addr[1]
        peer = hostOf(addr[0])
        reason = self._refusal(peer, port)
        if reason is not None:
            self.stats.dropped[reason] += 1
            if reason != "source-address":
                self.stats.peer(peer).dropped += 1
            self._log.emit(
                "info",
                "dropped datagram from {peer}:{port} ({size} bytes): {reason}",
                peer=peer,
                port=port,
                size=len(datagram),
                reason=reason,
            )
            return
        try:
            writeFrom(self.transport, datagram, addr, local)
        except (OSError, error.MessageLengthError) as e:
            self.stats.dropped["send-error"] += 1
            self._log.emit(
                "warn", "could not echo to {peer}:{port}: {e}", peer=peer, port=port, e=e
            )
            return
        self.stats.echoed += 1
        self.stats.bytes += len(datagram)
        counters = self.stats.peer(peer)
        counters.datagrams += 1
        counters.bytes += len(datagram)
        self._log.emit(
            "info",
            "echoed datagram #{number} from {peer}:{port}: {size} bytes",
            number=self.stats.echoed,
            peer=peer,
            port=port,
            size=len(datagram),
        )

    def _refusal(self, peer: str, port: int) -> str | None:
        """Why a datagram from C{peer} (as L{hostOf} gives it), C{port} must not be answered."""
        if isUnanswerableSource(peer):
            return "source-address"
        if port in self.policy.deniedSourcePorts:
            return "source-port"
        if self._perSource is not None and not self._perSource.allow(peer):
            return "rate"
        if self._global is not None and not self._global.take(self._clock.seconds()):
            return "global-rate"
        return None


@implementer(IPushProducer, IHalfCloseableProtocol)
class TCPEchoProtocol(Protocol, IdleTimeout):
    """
    RFC 862 TCP echo, paced by the reader.

    The protocol registers itself as the transport's streaming producer:
    when the transport's send buffer fills (the client is not reading), it
    is paused and stops reading from the client in turn.  A client that
    half-closes (done sending) still gets the rest of its echo before the
    connection closes.
    """

    factory: TCPEchoFactory
    transport: IConnectionTransport
    log = Logger(namespace="twisted_udpsuite.echo")

    timedOut = False

    def connectionMade(self) -> None:
        self._started = self.factory.clock.seconds()
        self.bytesEchoed = 0
        self.clock = self.factory.clock
        self.setTimeout(self.factory.idleTimeout)
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.bytesEchoed += len(data)
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self.log.info("closing idle echo connection from {peer}", peer=_peerText(self.transport))
        self.timedOut = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.factory.connectionClosed(self)


def _peerText(transport: IConnectionTransport) -> str:
    peer = transport.getPeer()
    return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"


class TCPEchoFactory(LimitedServerFactory[TCPEchoProtocol]):
    """
    Makes L{TCPEchoProtocol}s, within connection limits.

    @param reactor: the clock for idle timeouts (C{None}: the global reactor).
    @param stats: counters to update (shared with the UDP side by the service).
    @param maxConnections: open connections allowed in total.
    @param maxPerHost: open connections allowed per client address.
    @param idleTimeout: seconds of silence before a connection is closed.
    """

    protocol = TCPEchoProtocol
    log = Logger(namespace="twisted_udpsuite.echo")

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        stats: EchoStats | None = None,
        maxConnections: int = 256,
        maxPerHost: int = 16,
        idleTimeout: float = 300.0,
    ) -> None:
        super().__init__(maxConnections, maxPerHost)
        self.clock = reactorOr(reactor)
        self.stats = stats if stats is not None else EchoStats()
        self.idleTimeout = idleTimeout

    def refuseConnection(self, host: str, limit: str) -> Protocol | None:
        """Log the refusal; the connection is closed at once."""
        self.log.warn("refused echo connection from {peer}: {limit} limit", peer=host, limit=limit)
        return None

    def buildProtocol(self, addr: IAddress | None) -> TCPEchoProtocol | None:
        proto = super().buildProtocol(addr)
        if proto is not None:
            self.stats.connections += 1
        return proto

    def connectionClosed(self, proto: TCPEchoProtocol) -> str:
        """Count the connection closed and log what it echoed."""
        host = super().connectionClosed(proto)
        self.stats.bytes += proto.bytesEchoed
        self.stats.peer(host).bytes += proto.bytesEchoed
        self.log.info(
            "echo connection from {peer} closed: {bytes} bytes echoed in {duration:.3f}s",
            peer=host,
            bytes=proto.bytesEchoed,
            duration=self.clock.seconds() - proto._started,
            service="echo",
            file=None,
            outcome="timed out" if proto.timedOut else "closed",
        )
        return host
