"""
Discovery protocols: L{Responder} answers probes, L{Discoverer} sends them
and collects answers (L{discover} is the one-call form), L{PeerTable} keeps
the peers that announce themselves.

The rules are those of SSDP, mDNS and IPMsg: answer by unicast,
after a random delay within the prober's window, once per probe, at a
limited rate per source, never to broadcast or multicast sources nor to
oneself, and never with more bytes than the probe carried.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from twisted_udpsuite import ports
from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.discovery import wire
from twisted_udpsuite.discovery.interfaces import (
    broadcastInterfaces,
    directedBroadcasts,
    multicastInterfaceNames,
)
from twisted_udpsuite.discovery.wire import Kind, MalformedMessage, Message, ServiceEntry
from twisted_udpsuite.localaddress import ILocalAddressReceiver, writeFrom
from twisted_udpsuite.ratelimit import PerSourceLimiter
from twisted_udpsuite.reactors import IReactorUDPTime, reactorOr

__all__ = [
    "DiscoveredResponder",
    "Discoverer",
    "Peer",
    "PeerTable",
    "Responder",
    "ResponderStats",
    "discover",
    "newInstance",
]

Address = tuple[str, int]

#: How big a discovery datagram may be; bigger ones are not ours anyway.
MAX_DATAGRAM = 2048
IPV6_ALL_NODES = "ff02::1"
#: Where a discoverer also probes, for the responders of its own host bound to loopback.
LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"


def newInstance() -> bytes:
    """A fresh random instance id."""
    return os.urandom(wire.INSTANCE_SIZE)


@dataclass
class ResponderStats:
    """What a L{Responder} did, for logs, tests and the embedding app."""

    probes: int = 0
    answered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


@implementer(ILocalAddressReceiver)
class Responder(DatagramProtocol):
    """
    Answers discovery probes with a name and a list of services.

    Bind it to a wildcard address (C{""} or C{"::"}) to hear broadcasts.
    With C{announceInterval} it also announces itself to C{announceTargets}
    every so often and says goodbye when it stops listening.  Announces and
    goodbyes go out from a socket of their own, the only one with
    C{SO_BROADCAST}; the socket that answers probes never has it, so an
    answer can never become a broadcast.

    @param name: shown to discoverers (at most 64 UTF-8 bytes are sent).
    @param services: what runs here, described in answers and announces.
    @param rate: answers per second per source address; C{burst} at once.
    @param answerRatio: an answer is at most this many times its probe's size.
    @param random: the source of answer delays (seed it in tests).
    @param instance: this node's id; share it with a L{Discoverer} in the
        same app so the responder ignores that discoverer's probes.
    """

    log = Logger(namespace="twisted_udpsuite.discovery")

    def __init__(
        self,
        name: str,
        services: Iterable[ServiceEntry] = (),
        reactor: IReactorUDPTime | None = None,
        *,
        rate: float = 1.0,
        burst: float = 4,
        answerRatio: float = 1.0,
        random: random.Random | None = None,
        instance: bytes | None = None,
        announceInterval: float | None = None,
        announceTargets: Sequence[Address] = (),
        maxPending: int = 256,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.name = name
        self.services = tuple(services)
        self.instance = instance if instance is not None else newInstance()
        self.answerRatio = answerRatio
        self.stats = ResponderStats()
        self._random = random if random is not None else _systemRandom()
        self._limiter = PerSourceLimiter(self._reactor, rate, burst)
        self._seen: OrderedDict[tuple[str, int, bytes, int], float] = OrderedDict()
        self._pending: dict[tuple[str, int, bytes, int], Any] = {}
        self._maxPending = maxPending
        self.announceInterval = announceInterval
        self.announceTargets = list(announceTargets)
        self._announcer: task.LoopingCall | None = None
        self._announcePort: IUDPTransport | None = None

    # Lifecycle

    def startProtocol(self) -> None:
        if self.announceInterval and self.announceTargets:
            assert self.transport is not None
            host = self.transport.getHost().host
            interface = "" if ":" in host or host == "0.0.0.0" else host
            try:
                self._announcePort = IUDPTransport(
                    self._reactor.listenUDP(
                        0, _AnnounceSocket(), interface, maxPacketSize=MAX_DATAGRAM
                    )
                )
            except Exception as e:
                self.log.warn("cannot announce: no socket: {error}", error=e)
                return
            self._announcer = task.LoopingCall(self.announce)
            self._announcer.clock = self._reactor
            self._announcer.start(self.announceInterval, now=True)

    def stopProtocol(self) -> None:
        self.stopAnnouncing()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()

    def stopAnnouncing(self) -> None:
        """Say goodbye: stop announcing, tell the table, close the announce socket."""
        if self._announcer is not None:
            if self._announcer.running:
                self._announcer.stop()
            self._announcer = None
            self._sendAll(Message(Kind.GOODBYE, self.instance).toBytes())
        port, self._announcePort = self._announcePort, None
        if port is not None:
            port.stopListening()

    def announce(self) -> None:
        """Send one announce to every announce target."""
        lifetime = max(1, round(3 * (self.announceInterval or 0)))
        message = Message(
            Kind.ANNOUNCE,
            self.instance,
            lifetime=lifetime,
            name=self.name,
            services=self.services,
        )
        self._sendAll(message.toBytes(limit=512))

    def _sendAll(self, data: bytes) -> None:
        port = self._announcePort  # there while announcing, the only time this is called
        if port is None:
            return
        for target in self.announceTargets:
            try:
                port.write(data, target)
            except Exception as e:
                self.log.debug("cannot send to {target}: {error}", target=target, error=e)

    # Probes

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        self.datagramReceivedAt(data, addr, None)

    def datagramReceivedAt(self, data: bytes, addr: Address, local: str | None) -> None:
        """A probe sent to our address C{local}: the answer comes from there."""
        try:
            self._probeReceived(data, addr, local)
        except Exception:
            self.log.failure("while handling a datagram from {source}", source=addr)

    def _probeReceived(self, data: bytes, addr: Address, local: str | None) -> None:
        try:
            message = wire.parse(data)
        except MalformedMessage as e:
            self.stats.drop("malformed")
            self.log.debug("malformed datagram from {source}: {error}", source=addr, error=e)
            return
        if message.kind is not Kind.PROBE:
            return  # announces and answers from other nodes: not for us
        self.stats.probes += 1
        reason = self._refusal(message, data, addr)
        if reason is not None:
            self.stats.drop(reason)
            self.log.debug(
                "probe from {source} not answered: {reason}",
                source=addr,
                reason=reason,
                service="responder",
                peer=addr,
                outcome=reason,
            )
            return
        key = (hostOf(addr[0]), addr[1], message.instance, message.requestId)
        self._remember(key)
        delay = self._random.uniform(0, min(message.maxDelay, wire.MAX_DELAY))
        self._pending[key] = self._reactor.callLater(
            delay, self._answer, key, addr, local, message.requestId, len(data)
        )

    def _refusal(self, message: Message, data: bytes, addr: Address) -> str | None:
        """Why this probe gets no answer, or C{None} if it gets one."""
        if message.instance == self.instance:
            return "own"
        if isUnanswerableSource(addr[0]):
            return "source"
        if len(data) < wire.PROBE_MIN_SIZE:
            return "small"
        if self.instance in message.known:
            return "known"
        key = (hostOf(addr[0]), addr[1], message.instance, message.requestId)
        if key in self._pending or self._recentlySeen(key):
            return "duplicate"
        if len(self._pending) >= self._maxPending:
            return "busy"
        if not self._limiter.allow(key[0]):
            return "rate"
        return None

    def _recentlySeen(self, key: tuple[str, int, bytes, int]) -> bool:
        now = self._reactor.seconds()
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[oldest]
        return key in self._seen

    def _remember(self, key: tuple[str, int, bytes, int]) -> None:
        self._seen[key] = self._reactor.seconds() + 2 * wire.MAX_DELAY + 20
        self._seen.move_to_end(key)
        while len(self._seen) > 4096:
            self._seen.popitem(last=False)

    def _answer(
        self, key: Any, addr: Address, local: str | None, requestId: int, probeSize: int
    ) -> None:
        self._pending.pop(key, None)
        message = Message(
            Kind.ANSWER, self.instance, requestId, name=self.name, services=self.services
        )
        data = message.toBytes(limit=int(probeSize * self.answerRatio))
        try:
            writeFrom(self.transport, data, addr, local)
        except Exception as e:
            self.stats.drop("send")
            self.log.debug("cannot answer {source}: {error}", source=addr, error=e)
            return
        self.stats.answered += 1
        self.log.debug(
            "answered probe from {peer}: {bytes} bytes",
            peer=addr,
            bytes=len(data),
            service="responder",
            outcome="answered",
        )


def _systemRandom() -> random.Random:
    return random.SystemRandom()


class _AnnounceSocket(DatagramProtocol):
    """A responder's announce socket: sends broadcasts, answers nothing it hears."""

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.setBroadcastAllowed(True)


@dataclass
class DiscoveredResponder:
    """
    A responder found by a L{Discoverer}.

    @ivar address: where its first answer came from.
    @ivar addresses: every address it answered from (a node with several
        interfaces answers on each; they are one responder).
    """

    instance: bytes
    address: Address
    name: str
    services: tuple[ServiceEntry, ...]
    truncated: bool = False
    addresses: list[Address] = field(default_factory=list)


class _Socket(DatagramProtocol):
    """One of a discoverer's sockets; hands datagrams to its owner."""

    def __init__(self, owner: Discoverer) -> None:
        self.owner = owner

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.setBroadcastAllowed(self.owner.broadcast)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        try:
            self.owner.answerReceived(data, addr)
        except Exception:
            self.owner.log.failure("while handling an answer from {source}", source=addr)


class Discoverer:
    """
    Probes for responders and collects their answers.

    Probes go to 255.255.255.255 and to the directed broadcast of each
    interface (and to ff02::1 with C{ipv6}), and to this host's loopback
    (127.0.0.1 and ::1, where a responder bound to loopback hears them),
    C{attempts} times with growing gaps (C{interval}, then twice that, ...);
    each later probe lists the responders already heard so that they stay
    quiet.  With C{broadcast=False} only C{unicastTargets} are probed, and
    no socket may broadcast at all.

    @param interfaces: IPv4 interfaces (C{"192.0.2.1/24"}) whose directed
        broadcasts to probe; C{None} asks the operating system.
    @param ipv6Interfaces: interface names for C{ff02::1%NAME}; C{None} asks
        the operating system; empty means plain C{ff02::1} (the default link).
    @param onFound: called with each new L{DiscoveredResponder}.
    @param unicastTargets: addresses also probed directly (a responder
        bound to a unicast address, or one beyond a router).
    @param broadcast: probe the broadcast, multicast and loopback targets
        (the default); C{False} probes exactly C{unicastTargets}.
    @param loopback: with C{broadcast}, also probe 127.0.0.1 and ::1.
    """

    log = Logger(namespace="twisted_udpsuite.discovery")

    def __init__(
        self,
        reactor: IReactorUDPTime | None = None,
        port: int = ports.RESPONDER,
        *,
        interfaces: Iterable[str | ipaddress.IPv4Interface] | None = None,
        limitedBroadcast: bool = True,
        ipv6: bool = False,
        ipv6Interfaces: Sequence[str] | None = None,
        maxDelay: float = 1.0,
        attempts: int = 3,
        interval: float = 1.0,
        instance: bytes | None = None,
        onFound: Callable[[DiscoveredResponder], None] | None = None,
        probeSize: int = wire.PROBE_MIN_SIZE,
        unicastTargets: Sequence[str] = (),
        broadcast: bool = True,
        loopback: bool = True,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.port = port
        self.broadcast = broadcast
        self.targets: list[str] = []
        self.ipv6Targets: list[str] = []
        if broadcast:
            self._addBroadcastTargets(interfaces, limitedBroadcast, ipv6, ipv6Interfaces)
            if loopback:
                self.targets.append(LOOPBACK)
                self.ipv6Targets.append(LOOPBACK6)
        for host in unicastTargets:
            targets = self.ipv6Targets if ":" in host else self.targets
            if host not in targets:
                targets.append(host)
        self.maxDelay = min(maxDelay, wire.MAX_DELAY)
        self.attempts = attempts
        self.interval = interval
        self.instance = instance if instance is not None else newInstance()
        self.onFound = onFound
        self.probeSize = max(probeSize, wire.PROBE_MIN_SIZE)
        self.found: dict[bytes, DiscoveredResponder] = {}
        self.malformed = 0
        self.sendErrors = 0
        self._requestIds: set[int] = set()
        self._ports: list[Any] = []
        self._timers: list[Any] = []
        self._nextRequestId = int.from_bytes(os.urandom(4), "big")

    def _addBroadcastTargets(
        self,
        interfaces: Iterable[str | ipaddress.IPv4Interface] | None,
        limitedBroadcast: bool,
        ipv6: bool,
        ipv6Interfaces: Sequence[str] | None,
    ) -> None:
        if interfaces is None:
            found = [i for _, i in broadcastInterfaces()]
        else:
            found = [ipaddress.IPv4Interface(i) for i in interfaces]
        if limitedBroadcast:
            self.targets.append("255.255.255.255")
        self.targets += [t for t in directedBroadcasts(found) if t != "255.255.255.255"]
        if ipv6:
            if ipv6Interfaces is None:
                ipv6Interfaces = multicastInterfaceNames()
            self.ipv6Targets += [f"{IPV6_ALL_NODES}%{n}" for n in ipv6Interfaces] or [
                IPV6_ALL_NODES
            ]

    def start(self) -> None:
        """Bind the sockets and send the first probe (later ones are timed)."""
        if self.targets:
            self._ports.append(
                self._reactor.listenUDP(0, _Socket(self), "", maxPacketSize=MAX_DATAGRAM)
            )
        if self.ipv6Targets:
            try:
                self._ports.append(
                    self._reactor.listenUDP(0, _Socket(self), "::", maxPacketSize=MAX_DATAGRAM)
                )
            except Exception as e:
                self.log.debug("no IPv6 socket: {error}", error=e)
        gap, at = self.interval, 0.0
        self.probe()
        for _ in range(self.attempts - 1):
            at += gap
            gap *= 2
            self._timers.append(self._reactor.callLater(at, self.probe))

    def stop(self) -> None:
        """Close the sockets and cancel the timers; answers stop coming."""
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        ports_, self._ports = self._ports, []
        for port in ports_:
            port.stopListening()

    def probe(self) -> None:
        """Send one probe to every target."""
        requestId = self._nextRequestId
        self._nextRequestId = (self._nextRequestId + 1) & 0xFFFFFFFF
        self._requestIds.add(requestId)
        known = tuple(self.found)[: wire.MAX_KNOWN]
        data = Message(
            Kind.PROBE,
            self.instance,
            requestId,
            maxDelay=self.maxDelay,
            known=known,
            padTo=self.probeSize,
        ).toBytes()
        for port in self._ports:
            family6 = ":" in (port.getHost().host or "")
            for target in self.ipv6Targets if family6 else self.targets:
                try:
                    port.write(data, (target, self.port))
                except Exception as e:
                    self.sendErrors += 1
                    self.log.debug("cannot probe {target}: {error}", target=target, error=e)

    def answerReceived(self, data: bytes, addr: Address) -> None:
        """Take in one datagram: record a new responder or a new address of one."""
        try:
            message = wire.parse(data)
        except MalformedMessage as e:
            self.malformed += 1
            self.log.debug("malformed answer from {source}: {error}", source=addr, error=e)
            return
        if message.kind is not Kind.ANSWER or message.requestId not in self._requestIds:
            return
        if message.instance == self.instance:
            return
        address = (hostOf(addr[0]), addr[1])
        known = self.found.get(message.instance)
        if known is not None:
            if address not in known.addresses:
                known.addresses.append(address)
            return
        responder = DiscoveredResponder(
            message.instance,
            address,
            message.name,
            message.services,
            message.truncated,
            [address],
        )
        self.found[message.instance] = responder
        if self.onFound is not None:
            with self.log.failuresHandled("in the onFound callback"):
                self.onFound(responder)


def discover(
    reactor: IReactorUDPTime | None = None,
    port: int = ports.RESPONDER,
    timeout: float = 3.0,
    **kwargs: Any,
) -> Deferred[list[DiscoveredResponder]]:
    """
    Probe for C{timeout} seconds; fire with every responder found, in the
    order they answered.  Cancel the Deferred to stop early.  Keyword
    arguments go to L{Discoverer} (C{onFound=...} streams each new one).
    """
    reactor = reactorOr(reactor)
    discoverer = Discoverer(reactor, port, **kwargs)
    timer: list[Any] = []

    def cancel(d: Deferred[list[DiscoveredResponder]]) -> None:
        for t in timer:
            if t.active():
                t.cancel()
        discoverer.stop()

    d: Deferred[list[DiscoveredResponder]] = Deferred(cancel)
    try:
        discoverer.start()
    except Exception as e:
        discoverer.stop()
        return fail(e)

    def done() -> None:
        discoverer.stop()
        d.callback(list(discoverer.found.values()))

    timer.append(reactor.callLater(timeout, done))
    return d


@dataclass
class Peer:
    """A node that announced itself to a L{PeerTable}."""

    instance: bytes
    address: Address
    name: str
    services: tuple[ServiceEntry, ...]
    lastSeen: float
    expires: Any = field(default=None, repr=False)


class PeerTable(DatagramProtocol):
    """
    The live set of peers that announce themselves; a peer leaves when it
    says goodbye or when its announced lifetime passes without a new
    announce.  Bind to a wildcard address on the announce port (with
    C{listenMultiple} to share it with a L{Responder} on the same host).

    @param onJoin: called with each new L{Peer}.
    @param onLeave: called with each L{Peer} that left or expired.
    """

    log = Logger(namespace="twisted_udpsuite.discovery")

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        instance: bytes | None = None,
        onJoin: Callable[[Peer], None] | None = None,
        onLeave: Callable[[Peer], None] | None = None,
        maxPeers: int = 1024,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.instance = instance
        self.onJoin = onJoin
        self.onLeave = onLeave
        self.maxPeers = maxPeers
        self.peers: dict[bytes, Peer] = {}
        self.malformed = 0

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        try:
            self._received(data, addr)
        except Exception:
            self.log.failure("while handling a datagram from {source}", source=addr)

    def _received(self, data: bytes, addr: Address) -> None:
        try:
            message = wire.parse(data)
        except MalformedMessage as e:
            self.malformed += 1
            self.log.debug("malformed datagram from {source}: {error}", source=addr, error=e)
            return
        if message.instance == self.instance or isUnanswerableSource(addr[0]):
            return
        if message.kind is Kind.GOODBYE:
            self._remove(message.instance)
        elif message.kind is Kind.ANNOUNCE:
            self._announced(message, (hostOf(addr[0]), addr[1]))

    def _announced(self, message: Message, address: Address) -> None:
        lifetime = max(1, message.lifetime)
        peer = self.peers.get(message.instance)
        if peer is None:
            if len(self.peers) >= self.maxPeers:
                return
            peer = Peer(
                message.instance,
                address,
                message.name,
                message.services,
                self._reactor.seconds(),
            )
            self.peers[message.instance] = peer
            peer.expires = self._reactor.callLater(lifetime, self._remove, message.instance)
            if self.onJoin is not None:
                with self.log.failuresHandled("in the onJoin callback"):
                    self.onJoin(peer)
            return
        peer.lastSeen = self._reactor.seconds()
        peer.address, peer.name, peer.services = address, message.name, message.services
        peer.expires.reset(lifetime)

    def _remove(self, instance: bytes) -> None:
        peer = self.peers.pop(instance, None)
        if peer is None:
            return
        if peer.expires is not None and peer.expires.active():
            peer.expires.cancel()
        if self.onLeave is not None:
            with self.log.failuresHandled("in the onLeave callback"):
                self.onLeave(peer)

    def stopProtocol(self) -> None:
        for peer in self.peers.values():
            if peer.expires is not None and peer.expires.active():
                peer.expires.cancel()
        self.peers.clear()
