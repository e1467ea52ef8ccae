"""Tests for the in-memory datagram network, L{twisted_udpsuite.testing}."""

from __future__ import annotations

import errno

import pytest
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IReactorUDP, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from zope.interface.verify import verifyObject

from twisted_udpsuite.testing import EventClock, MemoryNetwork


class Recorder(DatagramProtocol):
    """Records what it receives; replies with C{reply} if set."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.refused = 0
        self.stopped = False
        self.reply = reply

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))
        if self.reply is not None:
            self.transport.write(self.reply, addr)

    def connectionRefused(self) -> None:
        self.refused += 1

    def stopProtocol(self) -> None:
        self.stopped = True


def twoHosts(**faults: float) -> tuple[MemoryNetwork, object, object]:
    net = MemoryNetwork(seed=7, **faults)  # type: ignore[arg-type]
    return net, net.addHost("192.0.2.1/24"), net.addHost("192.0.2.2/24")


def test_interfaces() -> None:
    """Hosts provide the reactor interfaces and ports provide IUDPTransport."""
    net, a, _ = twoHosts()
    port = a.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    assert verifyObject(IReactorUDP, a)
    assert verifyObject(IReactorTime, a)
    assert verifyObject(IUDPTransport, port)


def test_unicastDeliveryWaitsForThePump() -> None:
    """A datagram arrives only when time is moved, with the sender's address as source."""
    net, a, b = twoHosts()
    server = Recorder(reply=b"pong")
    client = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    port = b.listenUDP(0, client)  # type: ignore[attr-defined]
    port.write(b"ping", ("192.0.2.1", 7))
    assert server.received == []
    net.pump()
    assert server.received == [(b"ping", ("192.0.2.2", port.getHost().port))]
    assert client.received == [(b"pong", ("192.0.2.1", 7))]
    assert [r.fate for r in net.datagrams] == ["delivered", "delivered"]


def test_latency() -> None:
    """With latency, a datagram arrives that many seconds later."""
    net, a, b = twoHosts(latency=0.25)
    server = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    b.listenUDP(0, Recorder()).write(b"x", ("192.0.2.1", 7))  # type: ignore[attr-defined]
    net.advance(0.2)
    assert server.received == []
    net.advance(0.05)
    assert len(server.received) == 1


def test_eventClockRunsCallsAtTheirOwnTime() -> None:
    """A call scheduled by an earlier call in the same advance runs at its own time."""
    clock = EventClock()
    seen: list[float] = []
    clock.callLater(1, lambda: clock.callLater(1, lambda: seen.append(clock.seconds())))
    clock.advance(10)
    assert seen == [2.0]
    assert clock.seconds() == 10


def test_lossIsSeededAndRecorded() -> None:
    """The same seed loses the same datagrams; lost ones are recorded as such."""

    def run() -> list[str]:
        net, a, b = twoHosts(loss=0.3)
        a.listenUDP(7, Recorder())  # type: ignore[attr-defined]
        port = b.listenUDP(0, Recorder())  # type: ignore[attr-defined]
        for i in range(200):
            port.write(b"%d" % i, ("192.0.2.1", 7))
        net.pump()
        return [r.fate for r in net.datagrams]

    first = run()
    assert first == run()
    lost = first.count("lost")
    assert 40 < lost < 80
    assert first.count("delivered") == 200 - lost


def test_duplication() -> None:
    """Duplicated datagrams arrive twice and the copy is marked."""
    net, a, b = twoHosts(duplicate=1.0)
    server = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    b.listenUDP(0, Recorder()).write(b"x", ("192.0.2.1", 7))  # type: ignore[attr-defined]
    net.pump()
    assert [d for d, _ in server.received] == [b"x", b"x"]
    assert [r.duplicate for r in net.datagrams] == [False, True]


def test_reordering() -> None:
    """Reordered datagrams are overtaken by later ones."""
    net, a, b = twoHosts(reorder=0.5)
    server = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    port = b.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    for i in range(50):
        port.write(b"%02d" % i, ("192.0.2.1", 7))
    net.advance(1)
    order = [d for d, _ in server.received]
    assert sorted(order) == [b"%02d" % i for i in range(50)]
    assert order != sorted(order)


def test_truncation() -> None:
    """The network's maxDatagramSize and the receiver's maxPacketSize both cut datagrams."""
    net, a, b = twoHosts()
    net.maxDatagramSize = 100
    server = Recorder()
    small = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    a.listenUDP(8, small, maxPacketSize=10)  # type: ignore[attr-defined]
    port = b.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    port.write(b"y" * 500, ("192.0.2.1", 7))
    port.write(b"z" * 50, ("192.0.2.1", 8))
    net.pump()
    assert server.received[0][0] == b"y" * 100
    assert small.received[0][0] == b"z" * 10
    assert [r.fate for r in net.datagrams] == ["truncated", "delivered"]


def test_dropRules() -> None:
    """A drop rule blocks the datagrams it matches until it is removed."""
    net, a, b = twoHosts()
    server = Recorder()
    a.listenUDP(7, server)  # type: ignore[attr-defined]
    port = b.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    remove = net.dropIf(lambda record: record.data == b"drop me")
    port.write(b"drop me", ("192.0.2.1", 7))
    port.write(b"keep me", ("192.0.2.1", 7))
    remove()
    port.write(b"drop me", ("192.0.2.1", 7))
    net.pump()
    assert [d for d, _ in server.received] == [b"keep me", b"drop me"]
    assert net.datagrams[0].fate == "blocked"


def test_unreachableAndConnectionRefused() -> None:
    """Nobody listening: recorded as unreachable; a connected sender hears connectionRefused."""
    net, a, b = twoHosts()
    client = Recorder()
    port = b.listenUDP(0, client)  # type: ignore[attr-defined]
    port.connect("192.0.2.1", 9)
    port.write(b"hello")
    net.pump()
    assert net.datagrams[0].fate == "unreachable"
    assert client.refused == 1


def test_connectedPortHearsOnlyItsPeer() -> None:
    """A connected port drops datagrams from anyone but its peer, like the kernel."""
    net, a, b = twoHosts()
    c = net.addHost("192.0.2.3/24")
    listener = Recorder()
    port = a.listenUDP(5000, listener)  # type: ignore[attr-defined]
    port.connect("192.0.2.2", 6000)
    b.listenUDP(6000, Recorder()).write(b"peer", ("192.0.2.1", 5000))  # type: ignore[attr-defined]
    c.listenUDP(6000, Recorder()).write(b"other", ("192.0.2.1", 5000))
    net.pump()
    assert [d for d, _ in listener.received] == [b"peer"]


def test_stopListening() -> None:
    """A stopped port frees its number, stops its protocol and gets nothing more."""
    net, a, b = twoHosts()
    server = Recorder()
    port = a.listenUDP(7, server)  # type: ignore[attr-defined]
    b.listenUDP(0, Recorder()).write(b"late", ("192.0.2.1", 7))  # type: ignore[attr-defined]
    port.stopListening()
    net.pump()
    assert server.stopped
    assert server.received == []
    assert net.datagrams[0].fate == "unreachable"
    a.listenUDP(7, Recorder())  # type: ignore[attr-defined]
    with pytest.raises(error.NotListeningError):
        port.write(b"x", ("192.0.2.2", 1))


def test_bindErrors() -> None:
    """Binding a used port or a foreign address fails as the kernel would."""
    net, a, _ = twoHosts()
    a.listenUDP(7, Recorder())  # type: ignore[attr-defined]
    with pytest.raises(error.CannotListenError) as e:
        a.listenUDP(7, Recorder(), interface="192.0.2.1")  # type: ignore[attr-defined]
    assert e.value.socketError.errno == errno.EADDRINUSE
    with pytest.raises(error.CannotListenError) as e:
        a.listenUDP(8, Recorder(), interface="192.0.2.99")  # type: ignore[attr-defined]
    assert e.value.socketError.errno == errno.EADDRNOTAVAIL
    with pytest.raises(error.CannotListenError):
        a.listenUDP(7, Recorder(), interface="::")  # type: ignore[attr-defined]
    # Distinct specific addresses can share a port number.
    a.listenUDP(9, Recorder(), interface="127.0.0.1")  # type: ignore[attr-defined]
    a.listenUDP(9, Recorder(), interface="192.0.2.1")  # type: ignore[attr-defined]


def test_ephemeralPortsAreDistinct() -> None:
    """Port 0 picks a free ephemeral port each time."""
    net, a, _ = twoHosts()
    numbers = {a.listenUDP(0, Recorder()).getHost().port for _ in range(20)}  # type: ignore
    assert len(numbers) == 20
    assert min(numbers) >= 32768


def test_writeErrors() -> None:
    """Hostnames, wrong families and oversized datagrams are refused like udp.Port does."""
    net, a, _ = twoHosts()
    v4 = a.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    v6 = a.listenUDP(0, Recorder(), interface="::")  # type: ignore[attr-defined]
    with pytest.raises(error.InvalidAddressError):
        v4.write(b"x", ("example.com", 7))
    with pytest.raises(error.InvalidAddressError):
        v4.write(b"x", ("::1", 7))
    with pytest.raises(error.InvalidAddressError):
        v6.write(b"x", ("127.0.0.1", 7))
    with pytest.raises(error.MessageLengthError):
        v4.write(b"x" * 65508, ("127.0.0.1", 7))
    v4.write(b"x" * 65507, ("127.0.0.1", 7))


def test_loopbackStaysOnTheHost() -> None:
    """127.0.0.1 reaches the sender's own host only."""
    net, a, b = twoHosts()
    onA = Recorder()
    onB = Recorder()
    a.listenUDP(7, onA)  # type: ignore[attr-defined]
    b.listenUDP(7, onB)  # type: ignore[attr-defined]
    b.listenUDP(0, Recorder()).write(b"x", ("127.0.0.1", 7))  # type: ignore[attr-defined]
    net.pump()
    assert onA.received == []
    assert onB.received[0][1][0] == "127.0.0.1"


def test_broadcastNeedsPermission() -> None:
    """Sending to a broadcast address without setBroadcastAllowed fails with EACCES."""
    net, a, _ = twoHosts()
    port = a.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    with pytest.raises(PermissionError):
        port.write(b"hi", ("255.255.255.255", 9998))
    with pytest.raises(PermissionError):
        port.write(b"hi", ("192.0.2.255", 9998))


def test_broadcastReachesWildcardListenersOnTheLink() -> None:
    """
    A broadcast reaches every wildcard listener on that port on the link,
    the sender's own host included, but not sockets bound to a unicast
    address nor hosts on another subnet.
    """
    net, a, b = twoHosts()
    far = net.addHost("198.51.100.1/24")
    c = net.addHost("192.0.2.3/24")
    wildcardB, unicastC, wildcardA, wildcardFar = Recorder(), Recorder(), Recorder(), Recorder()
    b.listenUDP(9998, wildcardB)  # type: ignore[attr-defined]
    c.listenUDP(9998, unicastC, interface="192.0.2.3")
    a.listenUDP(9998, wildcardA)  # type: ignore[attr-defined]
    far.listenUDP(9998, wildcardFar)
    sender = a.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    sender.setBroadcastAllowed(True)
    for destination in ("255.255.255.255", "<broadcast>", "192.0.2.255"):
        sender.write(b"hi", (destination, 9998))
    net.pump()
    assert len(wildcardB.received) == 3
    assert len(wildcardA.received) == 3
    assert unicastC.received == [] and wildcardFar.received == []
    assert wildcardB.received[0][1] == ("192.0.2.1", sender.getHost().port)
    assert all(r.broadcast and r.receivers == 2 for r in net.datagrams)


def test_multipleInterfacesPickTheSourceAddress() -> None:
    """A host on two networks sends from the address on the destination's network."""
    net = MemoryNetwork()
    router = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    left = net.addHost("192.0.2.2/24")
    right = net.addHost("198.51.100.2/24")
    seenLeft, seenRight = Recorder(), Recorder()
    left.listenUDP(7, seenLeft)
    right.listenUDP(7, seenRight)
    port = router.listenUDP(0, Recorder())
    port.write(b"l", ("192.0.2.2", 7))
    port.write(b"r", ("198.51.100.2", 7))
    net.pump()
    assert seenLeft.received[0][1][0] == "192.0.2.1"
    assert seenRight.received[0][1][0] == "198.51.100.1"


def test_ipv6AndDualStack() -> None:
    """IPv6 unicast works; an IPv6 wildcard socket also gets IPv4 from a V4-mapped source."""
    net = MemoryNetwork()
    a = net.addHost("192.0.2.1/24", "2001:db8::1/64")
    b = net.addHost("192.0.2.2/24", "2001:db8::2/64")
    server = Recorder(reply=b"back")
    a.listenUDP(69, server, interface="::")
    v6 = Recorder()
    v4 = Recorder()
    b.listenUDP(0, v6, interface="::").write(b"six", ("2001:db8::1", 69))
    b.listenUDP(0, v4).write(b"four", ("192.0.2.1", 69))
    net.pump()
    sources = {data: addr[0] for data, addr in server.received}
    assert sources == {b"six": "2001:db8::2", b"four": "::ffff:192.0.2.2"}
    assert v6.received[0][1][0] == "2001:db8::1"
    assert v4.received[0][1][0] == "192.0.2.1"


def test_runUntil() -> None:
    """runUntil steps time until the Deferred fires, and refuses to wait for nothing."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    d: Deferred[str] = Deferred()
    host.callLater(30, d.callback, "done")
    assert net.runUntil(d) == "done"
    assert net.clock.seconds() == 30
    with pytest.raises(AssertionError, match="nothing is scheduled"):
        net.runUntil(Deferred())
    late: Deferred[None] = Deferred()
    host.callLater(100, late.callback, None)
    with pytest.raises(AssertionError, match="did not fire within 10"):
        net.runUntil(late, timeout=10)


def test_resolve() -> None:
    """Hosts resolve IP literals and localhost, and fail other names."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    assert net.runUntil(host.resolve("localhost")) == "127.0.0.1"
    assert net.runUntil(host.resolve("2001:db8::5")) == "2001:db8::5"
    with pytest.raises(error.DNSLookupError):
        net.runUntil(host.resolve("example.invalid"))


def test_badFaultShares() -> None:
    """Fault shares outside 0..1 are refused, and addresses belong to one host only."""
    with pytest.raises(ValueError):
        MemoryNetwork(loss=1.5)
    net = MemoryNetwork()
    net.addHost("192.0.2.1/24")
    with pytest.raises(ValueError):
        net.addHost("192.0.2.1/24")


def test_multicastNeedsAJoin() -> None:
    """A group's datagrams reach the sockets on the link that joined it, and only them."""
    from twisted.internet.interfaces import IMulticastTransport, IReactorMulticast

    net, a, b = twoHosts()
    c = net.addHost("192.0.2.3/24")
    far = net.addHost("198.51.100.1/24")
    joined, notJoined, farJoined = Recorder(), Recorder(), Recorder()
    port = b.listenMulticast(5353, joined)  # type: ignore[attr-defined]
    assert verifyObject(IMulticastTransport, port) and verifyObject(IReactorMulticast, b)
    net.runUntil(port.joinGroup("239.1.2.3"))
    c.listenMulticast(5353, notJoined)  # type: ignore[attr-defined]
    net.runUntil(far.listenMulticast(5353, farJoined).joinGroup("239.1.2.3"))
    # Sending to a group needs no join and no broadcast permission.
    a.listenUDP(0, Recorder()).write(b"hello group", ("239.1.2.3", 5353))  # type: ignore
    net.pump()
    assert [d for d, _ in joined.received] == [b"hello group"]
    assert notJoined.received == [] and farJoined.received == []
    net.runUntil(port.leaveGroup("239.1.2.3"))
    a.listenUDP(0, Recorder()).write(b"again", ("239.1.2.3", 5353))  # type: ignore
    net.pump()
    assert len(joined.received) == 1


def test_multicastJoinRefusesUnicast() -> None:
    """Joining an address that is not a multicast group fails."""
    from twisted.internet.error import MulticastJoinError

    from tests.helpers import failureResultOf

    net, a, _ = twoHosts()
    port = a.listenMulticast(5353, Recorder())  # type: ignore[attr-defined]
    failureResultOf(port.joinGroup("192.0.2.1"), MulticastJoinError)


def test_ipv6AllNodesAndLoopbackMode() -> None:
    """
    ff02::1 reaches every IPv6 socket on the link without a join, the
    sender's host included unless its loopback mode is off.
    """
    net = MemoryNetwork()
    a = net.addHost("fe80::1/64")
    b = net.addHost("fe80::2/64")
    onA, onB, v4OnB = Recorder(), Recorder(), Recorder()
    a.listenUDP(9998, onA, interface="::")
    b.listenUDP(9998, onB, interface="::")
    sender = a.listenMulticast(0, Recorder(), interface="::")
    sender.write(b"who is there", ("ff02::1", 9998))
    net.pump()
    assert onB.received == [(b"who is there", ("fe80::1", sender.getHost().port))]
    assert len(onA.received) == 1
    sender.setLoopbackMode(False)
    sender.write(b"quiet", ("ff02::1", 9998))
    net.pump()
    assert len(onA.received) == 1 and len(onB.received) == 2
    assert v4OnB.received == []


def test_listenMultipleSharesThePort() -> None:
    """Sockets bound with listenMultiple share a port and each gets broadcasts and groups."""
    net, a, b = twoHosts()
    first, second = Recorder(), Recorder()
    for proto in (first, second):
        port = b.listenMulticast(5353, proto, listenMultiple=True)  # type: ignore[attr-defined]
        net.runUntil(port.joinGroup("239.1.2.3"))
    with pytest.raises(error.CannotListenError):
        b.listenMulticast(5353, Recorder())  # type: ignore[attr-defined]
    sender = a.listenUDP(0, Recorder())  # type: ignore[attr-defined]
    sender.setBroadcastAllowed(True)
    sender.write(b"group", ("239.1.2.3", 5353))
    sender.write(b"broadcast", ("255.255.255.255", 5353))
    net.pump()
    assert [d for d, _ in first.received] == [b"group", b"broadcast"]
    assert [d for d, _ in second.received] == [b"group", b"broadcast"]
