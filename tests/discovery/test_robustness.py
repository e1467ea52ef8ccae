"""Discovery protocols fed junk, and the interface helpers."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogLevel, capturedLogs

from twisted_udpsuite.discovery.interfaces import (
    broadcastInterfaces,
    directedBroadcasts,
    multicastInterfaceNames,
)
from twisted_udpsuite.discovery.protocol import Discoverer, PeerTable, Responder, newInstance
from twisted_udpsuite.discovery.wire import Kind, Message, parse
from twisted_udpsuite.testing import MemoryNetwork

PORT = 9998


def probe(requestId: int) -> bytes:
    return Message(Kind.PROBE, newInstance(), requestId, maxDelay=0.5, padTo=256).toBytes()


def junk() -> st.SearchStrategy[bytes]:
    real = st.sampled_from(
        [
            probe(1),
            Message(Kind.ANSWER, newInstance(), 1, name="x").toBytes(),
            Message(Kind.ANNOUNCE, newInstance(), lifetime=3, name="y").toBytes(),
            Message(Kind.GOODBYE, newInstance()).toBytes(),
        ]
    )
    mutated = st.tuples(real, st.integers(0, 300), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    )
    return st.one_of(st.binary(max_size=300), mutated, real.map(lambda d: d[: len(d) // 2]))


@settings(max_examples=50, deadline=None)
@given(st.lists(junk(), max_size=20))
def test_junkNeverBreaksAnything(datagrams: list[bytes]) -> None:
    """
    Responder, discoverer and peer table take any bytes without an error
    (none escapes, none is logged as a failure), and the responder answers
    a good probe afterwards.
    """
    net = MemoryNetwork(seed=1)
    host = net.addHost("10.0.0.2/24")
    querier = net.addHost("10.0.0.1/24")
    responder = Responder("r", (), host, random=random.Random(0))
    host.listenUDP(PORT, responder)
    table = PeerTable(querier)
    discoverer = Discoverer(querier, PORT, interfaces=[])
    with capturedLogs() as events:
        for data in datagrams:
            for receiver in (responder, table):
                receiver.datagramReceived(data, ("10.0.0.1", 4000))
            discoverer.answerReceived(data, ("10.0.0.2", PORT))
        net.advance(10)
    assert not [e for e in events if e.get("log_failure") or e["log_level"] >= LogLevel.warn]
    got: list[bytes] = []
    client = DatagramProtocol()
    client.datagramReceived = lambda data, addr: got.append(data)  # type: ignore[method-assign]
    # From a fresh source: the junk may have spent 10.0.0.1's answer tokens.
    sock = net.addHost("10.0.0.3/24").listenUDP(0, client)
    sock.write(probe(777), ("10.0.0.2", PORT))
    net.advance(1)
    assert [parse(d).requestId for d in got] == [777]
    sock.stopListening()
    table.stopProtocol()
    assert net.clock.getDelayedCalls() == []


def test_responderCapsTheDelay() -> None:
    """A probe asking for a 60 s window is answered within 5 s anyway."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("10.0.0.2/24")
    querier = net.addHost("10.0.0.1/24")
    host.listenUDP(PORT, Responder("r", (), host, random=random.Random(4)))
    got: list[float] = []
    client = DatagramProtocol()
    client.datagramReceived = lambda data, addr: got.append(net.clock.seconds())  # type: ignore[method-assign]
    sock = querier.listenUDP(0, client)
    for i in range(4):
        data = Message(Kind.PROBE, newInstance(), i, maxDelay=60, padTo=256).toBytes()
        sock.write(data, ("10.0.0.2", PORT))
    net.advance(60)
    assert len(got) == 4 and max(got) <= 5.0


def test_directedBroadcasts() -> None:
    """Real netmasks, not /24; no broadcast for loopback, /31 and /32; each once."""
    interfaces = [
        ipaddress.IPv4Interface(i)
        for i in ("10.1.2.3/16", "192.0.2.9/28", "127.0.0.1/8", "198.51.100.1/31",
                  "203.0.113.5/32", "10.1.9.9/16")
    ]  # fmt: skip
    assert directedBroadcasts(interfaces) == ["10.1.255.255", "192.0.2.15"]


def test_systemInterfaces() -> None:
    """This machine's interfaces: up, broadcast-capable, not loopback, real prefixes."""
    for name, interface in broadcastInterfaces():
        assert name != "lo" and not interface.ip.is_loopback
        assert 0 < interface.network.prefixlen <= 32
    assert "lo" not in multicastInterfaceNames()
