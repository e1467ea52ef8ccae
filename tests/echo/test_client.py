"""Unit tests for the ping-like echo client, on the in-memory network."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import DatagramProtocol

from tests.helpers import failureResultOf
from twisted_udpsuite.echo.client import ping
from twisted_udpsuite.echo.server import EchoPolicy, UDPEchoProtocol
from twisted_udpsuite.testing import MemoryNetwork


def setUp(**faults: float):  # type: ignore[no-untyped-def]
    net = MemoryNetwork(seed=11, **faults)  # type: ignore[arg-type]
    server = net.addHost("192.0.2.1/24", "2001:db8::1/64")
    client = net.addHost("192.0.2.2/24", "2001:db8::2/64")
    server.listenUDP(7007, UDPEchoProtocol(server), interface="::", maxPacketSize=65536)
    return net, client


def test_roundTrips() -> None:
    """Every probe is answered; round-trip times are the network's latency both ways."""
    net, client = setUp(latency=0.01)
    replies = []
    result = net.runUntil(
        ping(client, ("192.0.2.1", 7007), count=4, interval=1, size=100, onReply=replies.append)
    )
    assert [r.sequence for r in replies] == [0, 1, 2, 3]
    assert all(r.size == 100 for r in replies)
    assert result.sent == 4 and result.received == 4 and result.loss == 0
    assert result.rtts() == pytest.approx((0.02, 0.02, 0.02, 0.0))
    assert result.elapsed == pytest.approx(3.02)
    assert net.clock.getDelayedCalls() == []


def test_lossIsReported() -> None:
    """Probes lost on the way are timed out and counted as loss."""
    net, client = setUp(loss=0.3)
    timeouts: list[int] = []
    result = net.runUntil(
        ping(
            client,
            ("192.0.2.1", 7007),
            count=40,
            interval=0.1,
            timeout=0.5,
            onTimeout=timeouts.append,
        )
    )
    assert result.sent == 40
    assert 0 < len(timeouts) == 40 - result.received
    assert result.loss == pytest.approx(len(timeouts) / 40)
    assert net.clock.getDelayedCalls() == []


def test_ipv6() -> None:
    """IPv6 targets work."""
    net, client = setUp()
    result = net.runUntil(ping(client, ("2001:db8::1", 7007), count=2, interval=0))
    assert result.received == 2


def test_duplicatesAndStrays() -> None:
    """Duplicated replies and datagrams from others do not count as replies."""
    net, client = setUp(duplicate=1.0)
    result = net.runUntil(ping(client, ("192.0.2.1", 7007), count=3, interval=0.5))
    assert result.received == 3
    # Each probe is duplicated on the way there and each echo on the way
    # back: 3 extra copies per probe, but the last probe's arrive after the
    # run has ended and its port closed.
    assert result.duplicates == 6


def test_strayDatagrams() -> None:
    """Datagrams that are not replies to this run are counted as stray, not as replies."""
    net = MemoryNetwork()
    client = net.addHost("192.0.2.2/24")
    liar = net.addHost("192.0.2.1/24")

    class Liar(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.write(b"UEP1" + b"\0" * 12, addr)  # wrong nonce
            self.transport.write(b"?", addr)  # too short

    liar.listenUDP(7007, Liar())
    result = net.runUntil(ping(client, ("192.0.2.1", 7007), count=2, interval=0.1, timeout=1))
    assert result.received == 0 and result.stray == 4 and result.loss == 1


def test_lateReplyCountsAsLost() -> None:
    """A reply after the probe's timeout is not counted."""
    net, client = setUp(latency=1.0)
    result = net.runUntil(ping(client, ("192.0.2.1", 7007), count=1, timeout=1.5))
    assert result.received == 0
    net.advance(1)  # the late reply lands on a closed port
    assert net.datagrams[-1].fate == "unreachable"
    assert net.clock.getDelayedCalls() == []


def test_cancel() -> None:
    """Cancelling stops the probes, the timers and the port."""
    net, client = setUp()
    d = ping(client, ("192.0.2.1", 7007), count=100, interval=1)
    net.advance(2.5)
    d.cancel()
    failureResultOf(d, CancelledError)
    assert net.clock.getDelayedCalls() == []
    assert not [p for p in client.udpPorts.values()]


def test_rateLimitedServerShowsAsLoss() -> None:
    """A server's rate limit appears to the pinger as loss, not as an error."""
    net = MemoryNetwork()
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server.listenUDP(7007, UDPEchoProtocol(server, EchoPolicy(rate=1, burst=2)))
    result = net.runUntil(ping(client, ("192.0.2.1", 7007), count=10, interval=0))
    assert result.received == 2


def test_badArguments() -> None:
    """Nonsense counts and sizes are refused before anything is sent."""
    net, client = setUp()
    for kwargs in ({"count": 0}, {"size": 3}, {"size": 70000}, {"timeout": 0}):
        with pytest.raises(ValueError):
            ping(client, ("192.0.2.1", 7007), **kwargs)  # type: ignore[arg-type]
    assert net.datagrams == []
