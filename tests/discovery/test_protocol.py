"""Tests for the discovery protocols on the in-memory network."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import DatagramProtocol

from tests.helpers import failureResultOf, useHostBroadcasts
from twisted_udpsuite.discovery import wire
from twisted_udpsuite.discovery.protocol import (
    Discoverer,
    PeerTable,
    Responder,
    discover,
    newInstance,
)
from twisted_udpsuite.discovery.service import ResponderService
from twisted_udpsuite.discovery.wire import Kind, Message, ServiceEntry, parse
from twisted_udpsuite.testing import MemoryHost, MemoryNetwork

PORT = 9998
SERVICES = (ServiceEntry("echo", "udp", 7007), ServiceEntry("files", "tcp", 8000))


def lan(
    count: int, seed: int = 1, **faults: Any
) -> tuple[MemoryNetwork, MemoryHost, list[Responder]]:
    """A /24 with a querier at .1 and C{count} responders from .2 on."""
    net = MemoryNetwork(seed=seed, **faults)
    querier = net.addHost("10.0.0.1/24")
    responders = []
    for i in range(count):
        host = net.addHost(f"10.0.0.{i + 2}/24")
        responder = Responder(f"node{i}", SERVICES, host, random=random.Random(i))
        host.listenUDP(PORT, responder, maxPacketSize=2048)
        responders.append(responder)
    return net, querier, responders


def answers(net: MemoryNetwork) -> list[Any]:
    """Every answer datagram sent, with its parsed message."""
    out = []
    for record in net.datagrams:
        message = parse(record.data)
        if message.kind is Kind.ANSWER and not record.duplicate:
            out.append((record, message))
    return out


def runDiscover(net: MemoryNetwork, querier: MemoryHost, **kwargs: Any) -> list[Any]:
    kwargs.setdefault("interfaces", ["10.0.0.1/24"])
    kwargs.setdefault("timeout", 6.0)
    return net.runUntil(discover(querier, PORT, **kwargs))


def test_findsEveryResponderOnce() -> None:
    """50 responders, no loss: each is reported once, with its name and services."""
    net, querier, responders = lan(50)
    seen: list[Any] = []
    found = runDiscover(net, querier, onFound=seen.append)
    assert sorted(r.name for r in found) == sorted(r.name for r in responders)
    assert seen == found
    assert all(r.services == SERVICES for r in found)
    assert {r.address for r in found} == {(f"10.0.0.{i + 2}", PORT) for i in range(50)}
    assert net.clock.getDelayedCalls() == []


def test_answersOncePerProbeDespiteCopies() -> None:
    """
    A probe reaches each responder twice (limited and directed broadcast), and
    the network duplicates some datagrams: still one answer per responder per
    request, and later probes list the known responders, who stay quiet.
    """
    net, querier, responders = lan(50, duplicate=0.3)
    runDiscover(net, querier)
    perResponder = Counter((m.instance, m.requestId) for _, m in answers(net))
    assert set(perResponder.values()) == {1}
    assert len(perResponder) == 50  # all answered the first probe, none the repeats
    assert sum(r.stats.dropped.get("duplicate", 0) for r in responders) >= 50
    assert sum(r.stats.dropped.get("known", 0) for r in responders) >= 100


def test_delaySpread() -> None:
    """Answers come at random within the probe's max-delay, not all at once."""
    net, querier, _ = lan(50)
    runDiscover(net, querier, maxDelay=2.0, attempts=1)
    times = [record.time for record, _ in answers(net)]
    assert len(times) == 50
    assert all(0 <= t <= 2.0 for t in times)
    assert max(times) - min(times) > 1.5
    # No instant carries more than a few answers: the storm is spread out.
    buckets = Counter(int(t * 10) for t in times)
    assert max(buckets.values()) <= 8


def test_survivesLoss() -> None:
    """With 20% loss, repeated probes still find every responder."""
    net, querier, _ = lan(50, seed=3, loss=0.2)
    found = runDiscover(net, querier, attempts=4, timeout=10.0)
    assert len(found) == 50
    assert len({r.instance for r in found}) == 50
    assert net.clock.getDelayedCalls() == []


def test_answerNeverLargerThanProbe() -> None:
    """A responder with many services truncates its answer to the probe's size."""
    net, querier, _ = lan(0)
    host = net.addHost("10.0.0.2/24")
    many = [ServiceEntry(f"svc{i}", "tcp", 1000 + i) for i in range(60)]
    host.listenUDP(PORT, Responder("big" * 20, many, host, random=random.Random(0)))
    [found] = runDiscover(net, querier, attempts=1)
    assert found.truncated and 0 < len(found.services) < 60
    [(record, _)] = answers(net)
    probeSize = len(net.datagrams[0].data)
    assert probeSize == wire.PROBE_MIN_SIZE
    assert len(record.data) <= probeSize


def test_smallProbeIgnored() -> None:
    """A probe under the minimum size (no padding) gets no answer."""
    net, querier, responders = lan(1)
    sock = querier.listenUDP(0, DatagramProtocol())
    sock.write(Message(Kind.PROBE, newInstance(), 1, maxDelay=0.1).toBytes(), ("10.0.0.2", PORT))
    net.advance(1)
    assert responders[0].stats.dropped == {"small": 1}
    assert answers(net) == []


def test_rateLimitPerSource() -> None:
    """A source probing fast gets at most its burst answered, then the rate."""
    net, querier, [responder] = lan(1)
    got: list[bytes] = []
    proto = DatagramProtocol()
    proto.datagramReceived = lambda data, addr: got.append(data)  # type: ignore[method-assign]
    sock = querier.listenUDP(0, proto)
    instance = newInstance()
    for i in range(20):
        probe = Message(Kind.PROBE, instance, i, maxDelay=0.0, padTo=256).toBytes()
        sock.write(probe, ("10.0.0.2", PORT))
    net.advance(1)
    assert len(got) == 4  # the default burst
    assert responder.stats.dropped["rate"] == 16
    net.advance(5)
    sock.write(Message(Kind.PROBE, instance, 99, padTo=256).toBytes(), ("10.0.0.2", PORT))
    net.advance(1)
    assert len(got) == 5  # tokens came back with time
    sock.stopListening()
    assert net.clock.getDelayedCalls() == []


def test_ownProbesIgnored() -> None:
    """A discoverer sharing the responder's instance does not find that responder."""
    net, querier, _ = lan(3)
    mine = newInstance()
    own = Responder("me", (), querier, instance=mine, random=random.Random(0))
    querier.listenUDP(PORT, own)
    found = runDiscover(net, querier, instance=mine)
    assert sorted(r.name for r in found) == ["node0", "node1", "node2"]
    assert own.stats.dropped["own"] >= 1 and own.stats.answered == 0


def test_neverAnswersBroadcastOrMulticastSources() -> None:
    """Forged broadcast, multicast and unspecified sources get no answer."""
    net, _, [responder] = lan(1)
    probe = Message(Kind.PROBE, newInstance(), 1, padTo=256).toBytes()
    for source in ("255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1", "::ffff:239.1.1.1"):
        responder.datagramReceived(probe, (source, 5000))
    net.advance(10)
    assert responder.stats.dropped == {"source": 5}
    assert answers(net) == []


def test_malformedCountedAndHarmless() -> None:
    """Garbage is counted and dropped; the responder still answers afterwards."""
    net, querier, [responder] = lan(1)
    for junk in (b"", b"hello", b"UDPD\x07" + bytes(40), b"UDPD\x01\x01" + bytes(16) + b"\x01"):
        responder.datagramReceived(junk, ("10.0.0.1", 5000))
    assert responder.stats.dropped == {"malformed": 4}
    assert [r.name for r in runDiscover(net, querier)] == ["node0"]


def test_discovererIgnoresStrangers() -> None:
    """Answers to other requests, other kinds and junk do not count as responders."""
    net, querier, _ = lan(0)
    discoverer = Discoverer(querier, PORT, interfaces=[])
    discoverer.answerReceived(b"junk", ("10.0.0.9", PORT))
    stray = Message(Kind.ANSWER, newInstance(), 12345, name="x").toBytes()
    discoverer.answerReceived(stray, ("10.0.0.9", PORT))
    assert discoverer.found == {} and discoverer.malformed == 1


def test_multiHomedResponderMerged() -> None:
    """A responder answering from two addresses is one responder with two addresses."""
    net = MemoryNetwork(seed=1)
    querier = net.addHost("10.0.0.1/24", "10.1.0.1/24")
    host = net.addHost("10.0.0.2/24", "10.1.0.2/24")
    host.listenUDP(PORT, Responder("twohomes", (), host, random=random.Random(0)))
    querier2 = Discoverer(querier, PORT, interfaces=["10.0.0.1/24", "10.1.0.1/24"])
    querier2.start()
    net.advance(10)
    querier2.stop()
    [found] = querier2.found.values()
    assert found.name == "twohomes"
    assert net.clock.getDelayedCalls() == []


def test_cancel() -> None:
    """Cancelling discover() closes its socket and cancels its timers."""
    net, querier, _ = lan(5)
    d = discover(querier, PORT, timeout=5, interfaces=["10.0.0.1/24"])
    net.advance(0.5)
    d.cancel()
    failureResultOf(d, CancelledError)
    net.advance(5)  # pending answers land on a closed port
    assert querier.sockets == []
    assert net.clock.getDelayedCalls() == []


def test_limitedBroadcastUnreachableStillUsesDirected() -> None:
    """A send error on one target (ENETUNREACH on a real host) does not stop the rest."""
    net, querier, _ = lan(2)

    def refuse(*args: Any) -> None:
        raise OSError(101, "Network is unreachable")

    discoverer = Discoverer(querier, PORT, interfaces=["10.0.0.1/24"], attempts=1)
    discoverer.start()
    sock = discoverer._ports[0]  # the IPv4 one; the other probes ::1
    original = sock.write
    sock.write = lambda data, addr: (
        refuse() if addr[0] == "255.255.255.255" else original(data, addr)
    )
    discoverer.probe()
    net.advance(3)
    discoverer.stop()
    assert discoverer.sendErrors == 1
    assert len(discoverer.found) == 2


def test_ipv6AllNodes() -> None:
    """With ipv6, a probe to ff02::1 finds responders bound to '::'."""
    net = MemoryNetwork(seed=1)
    querier = net.addHost("fe80::1/64")
    for i in range(3):
        host = net.addHost(f"fe80::{i + 2}/64")
        host.listenUDP(PORT, Responder(f"v6-{i}", (), host, random=random.Random(i)), "::")
    found = net.runUntil(
        discover(
            querier,
            PORT,
            timeout=4,
            interfaces=[],
            limitedBroadcast=False,
            ipv6=True,
            ipv6Interfaces=(),
        )
    )
    assert sorted(r.name for r in found) == ["v6-0", "v6-1", "v6-2"]
    assert all(r.address[0].startswith("fe80::") for r in found)


def test_presence() -> None:
    """Announces add peers; a goodbye removes one at once; silence expires one."""
    net = MemoryNetwork(seed=1)
    listener = net.addHost("10.0.0.1/24")
    joined: list[str] = []
    left: list[tuple[str, float]] = []
    table = PeerTable(
        listener,
        onJoin=lambda p: joined.append(p.name),
        onLeave=lambda p: left.append((p.name, net.clock.seconds())),
    )
    tablePort = listener.listenUDP(PORT, table)
    services = []
    for i in range(3):
        host = net.addHost(f"10.0.0.{i + 2}/24")
        service = ResponderService(
            f"peer{i}",
            SERVICES,
            reactor=host,
            announceInterval=10,
            announceTargets=[("10.0.0.255", PORT)],
        )
        service.startService()
        services.append(service)
    net.advance(1)
    assert sorted(joined) == ["peer0", "peer1", "peer2"]
    assert table.peers[services[0].responder.instance].services == SERVICES
    # peer0 stops: its goodbye removes it at once.
    services[0].stopService()
    net.advance(0.5)
    assert left == [("peer0", 1.0)]
    # peer1 goes silent (its announces are blocked): it expires after 3 intervals.
    net.dropIf(lambda r: r.source[0] == "10.0.0.3")
    net.advance(60)
    assert left[1][0] == "peer1" and 29 <= left[1][1] <= 31
    assert [p.name for p in table.peers.values()] == ["peer2"]
    services[2].stopService()
    services[1].stopService()
    net.advance(0.1)
    assert table.peers == {}
    tablePort.stopListening()
    assert net.clock.getDelayedCalls() == []


def test_peerTableIgnoresJunkAndItself() -> None:
    """Junk is counted; its own announces and forged broadcast sources are ignored."""
    net = MemoryNetwork()
    host = net.addHost("10.0.0.1/24")
    me = newInstance()
    table = PeerTable(host, instance=me)
    announce = Message(Kind.ANNOUNCE, me, lifetime=5, name="me").toBytes()
    table.datagramReceived(announce, ("10.0.0.1", PORT))
    other = Message(Kind.ANNOUNCE, newInstance(), lifetime=5, name="x").toBytes()
    table.datagramReceived(other, ("255.255.255.255", PORT))
    table.datagramReceived(b"\x00" * 30, ("10.0.0.2", PORT))
    assert table.peers == {} and table.malformed == 1


@pytest.mark.parametrize("maxDelay", [0.0, 9.0])
def test_maxDelayClamped(maxDelay: float) -> None:
    """Max-delay 0 answers at once; more than 5 s is treated as 5 s."""
    net, querier, _ = lan(10)
    runDiscover(net, querier, maxDelay=maxDelay, attempts=1, timeout=7)
    times = [record.time for record, _ in answers(net)]
    assert len(times) == 10
    assert max(times) <= min(maxDelay, wire.MAX_DELAY)


def test_findsTheLoopbackResponderOfItsOwnHost() -> None:
    """
    A responder of the querier's own host bound to loopback (as C{bash .ci/serve} binds
    it) hears no broadcast, but the default discovery probes 127.0.0.1 too and finds it,
    beside the LAN's responders.
    """
    net, querier, _ = lan(2)
    local = Responder("local", (), querier, random=random.Random(0))
    querier.listenUDP(PORT, local, "127.0.0.1")
    found = runDiscover(net, querier)
    assert sorted(r.name for r in found) == ["local", "node0", "node1"]
    [mine] = [r for r in found if r.name == "local"]
    assert mine.address == ("127.0.0.1", PORT)
    assert net.clock.getDelayedCalls() == []


def test_findsTheIPv6LoopbackResponder() -> None:
    """A responder bound to ::1 only is found through the ::1 probe."""
    net, querier, _ = lan(0)
    querier.listenUDP(PORT, Responder("six", (), querier, random=random.Random(0)), "::1")
    [found] = runDiscover(net, querier)
    assert found.name == "six" and found.address == ("::1", PORT)


def test_unicastOnlyProbesExactlyThoseHosts() -> None:
    """
    With broadcast=False, probes go to the named hosts only: no datagram is a broadcast,
    loopback is not probed, no socket may broadcast, and other responders stay unknown.
    """
    net, querier, _ = lan(3)
    querier.listenUDP(PORT, Responder("local", (), querier, random=random.Random(0)))
    discoverer = Discoverer(querier, PORT, unicastTargets=["10.0.0.3"], broadcast=False)
    discoverer.start()
    assert [p.getBroadcastAllowed() for p in discoverer._ports] == [False]
    net.advance(10)
    discoverer.stop()
    assert [r.name for r in discoverer.found.values()] == ["node1"]
    probes = [r for r in net.datagrams if parse(r.data).kind is Kind.PROBE]
    assert len(probes) == 3
    assert {r.destination for r in probes} == {("10.0.0.3", PORT)}
    assert not any(r.broadcast for r in net.datagrams)
    assert net.clock.getDelayedCalls() == []


def test_announcesFromASocketOfTheirOwn(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    An announcing responder sends its announces and goodbye from a socket of their own,
    the only one allowed to broadcast; the socket that answers probes never may, and
    a probe forged from the subnet's directed broadcast is not answered.
    """
    net, querier, _ = lan(0)
    host = net.addHost("10.0.0.2/24")
    useHostBroadcasts(monkeypatch, host)
    service = ResponderService(
        "loud", reactor=host, announceInterval=5, announceTargets=[("10.0.0.255", PORT)]
    )
    service.startService()
    responder = service.responder
    assert service.udpPort.getBroadcastAllowed() is False
    [announcePort] = [p for p in host.sockets if p is not service.udpPort]
    assert announcePort.getBroadcastAllowed() is True
    probe = Message(Kind.PROBE, newInstance(), 1, maxDelay=0.0, padTo=256).toBytes()
    responder.datagramReceived(probe, ("10.0.0.255", 40001))
    responder.datagramReceived(probe, ("10.0.0.0", 40001))
    net.advance(12)
    service.stopService()
    net.advance(1)
    kinds = Counter((parse(r.data).kind, r.source[1]) for r in net.datagrams)
    source = announcePort.port
    assert kinds == {(Kind.ANNOUNCE, source): 3, (Kind.GOODBYE, source): 1}
    assert responder.stats.dropped == {"source": 2}
    assert host.sockets == []
    assert net.clock.getDelayedCalls() == []


def test_forgedLocalBroadcastSourceNotAnswered(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A probe whose source is forged to the directed broadcast (or network address) of the
    responder's subnet gets no answer: the answer would go to the whole LAN.
    """
    net, _, [responder] = lan(1)
    useHostBroadcasts(monkeypatch, net.addHost("10.0.0.99/24"))
    probe = Message(Kind.PROBE, newInstance(), 1, maxDelay=0.0, padTo=256).toBytes()
    for source in ("10.0.0.255", "10.0.0.0", "::ffff:10.0.0.255"):
        responder.datagramReceived(probe, (source, 5000))
    net.advance(1)
    assert responder.stats.dropped == {"source": 3}
    assert answers(net) == []
