"""Unit tests for the echo servers, on the in-memory network and StringTransport."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from twisted_udpsuite.echo.server import (
    DEFAULT_DENIED_SOURCE_PORTS,
    EchoPolicy,
    TCPEchoFactory,
    UDPEchoProtocol,
)
from twisted_udpsuite.testing import MemoryNetwork


class Collector(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


def echoNetwork(policy: EchoPolicy | None = None, **faults: float):  # type: ignore[no-untyped-def]
    net = MemoryNetwork(seed=3, **faults)  # type: ignore[arg-type]
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    echo = UDPEchoProtocol(server, policy)
    server.listenUDP(7007, echo, maxPacketSize=65536)
    return net, client, echo


def test_echoesExactlyWhatArrives() -> None:
    """Every datagram goes back unchanged, including empty and maximum-size ones."""
    net, client, echo = echoNetwork()
    collector = Collector()
    port = client.listenUDP(40000, collector, maxPacketSize=65536)
    payloads = [b"", b"hello", bytes(range(256)), b"x" * 65507]
    for payload in payloads:
        port.write(payload, ("192.0.2.1", 7007))
    net.pump()
    assert collector.received == payloads
    assert echo.stats.echoed == 4
    assert echo.stats.bytes == sum(map(len, payloads))
    # Never more bytes back than came in.
    sent = sum(len(r.data) for r in net.datagrams if r.source[1] == 40000)
    back = sum(len(r.data) for r in net.datagrams if r.source[1] == 7007)
    assert back == sent


def test_perPeerCounters() -> None:
    """The embedding app sees per-peer datagram, byte and drop counts."""
    net, client, echo = echoNetwork()
    other = net.addHost("192.0.2.3/24")
    client.listenUDP(40000, Collector()).write(b"abc", ("192.0.2.1", 7007))
    other.listenUDP(40001, Collector()).write(b"defgh", ("192.0.2.1", 7007))
    other.listenUDP(53, Collector()).write(b"evil", ("192.0.2.1", 7007))
    net.pump()
    assert echo.stats.peers["192.0.2.2"].datagrams == 1
    assert echo.stats.peers["192.0.2.2"].bytes == 3
    assert echo.stats.peers["192.0.2.3"].bytes == 5
    assert echo.stats.peers["192.0.2.3"].dropped == 1


def test_deniedSourcePorts() -> None:
    """Datagrams from echo (7), chargen (19), NFS, privileged and suite ports are not answered."""
    for port in (7, 19, 123, 2049, 7007, 6969):
        assert port in DEFAULT_DENIED_SOURCE_PORTS
        net, client, echo = echoNetwork()
        client.listenUDP(port, Collector()).write(b"loop?", ("192.0.2.1", 7007))
        net.pump()
        assert echo.stats.echoed == 0
        assert echo.stats.dropped["source-port"] == 1
        assert len(net.datagrams) == 1


def test_broadcastAndMulticastSourcesIgnored() -> None:
    """A datagram claiming a broadcast, multicast or unspecified source is dropped."""
    net, client, echo = echoNetwork()
    echo.transport = _RecordingTransport()
    for source in ("255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1", "::", "::ffff:224.0.0.9"):
        echo.datagramReceived(b"fraggle", (source, 40000))
    assert echo.transport.written == []
    assert echo.stats.dropped["source-address"] == 6
    assert echo.stats.peers == {}


class _RecordingTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def test_perSourceTokenBucket() -> None:
    """A source gets a burst, then C{rate} replies a second up to the burst; others unaffected."""
    net, client, echo = echoNetwork(EchoPolicy(rate=10, burst=5, globalRate=None))
    collector = Collector()
    port = client.listenUDP(40000, collector)
    for _ in range(20):
        port.write(b"x", ("192.0.2.1", 7007))
    net.pump()
    assert len(collector.received) == 5
    assert echo.stats.dropped["rate"] == 15
    net.advance(0.3)
    for _ in range(20):
        port.write(b"x", ("192.0.2.1", 7007))
    net.pump()
    assert len(collector.received) == 8
    net.advance(60)
    for _ in range(20):
        port.write(b"x", ("192.0.2.1", 7007))
    net.pump()
    assert len(collector.received) == 13
    other = Collector()
    net.addHost("192.0.2.3/24").listenUDP(40000, other).write(b"y", ("192.0.2.1", 7007))
    net.pump()
    assert other.received == [b"y"]


def test_globalRate() -> None:
    """Forged sources spread over many addresses still meet the global cap."""
    net, client, echo = echoNetwork(EchoPolicy(rate=None, globalRate=5))
    echo.transport = _RecordingTransport()
    for i in range(50):
        echo.datagramReceived(b"x", (f"203.0.113.{i}", 40000))
    assert len(echo.transport.written) == 5
    assert echo.stats.dropped["global-rate"] == 45


def test_underLoss() -> None:
    """With 30% loss each way, what arrives is echoed and nothing else happens."""
    net, client, echo = echoNetwork(loss=0.3)
    collector = Collector()
    port = client.listenUDP(40000, collector)
    for i in range(100):
        port.write(b"%d" % i, ("192.0.2.1", 7007))
    net.pump()
    arrived = [r for r in net.datagrams if r.source[1] == 40000 and r.fate == "delivered"]
    assert echo.stats.echoed == len(arrived)
    assert 0 < len(collector.received) < len(arrived) < 100
    assert net.clock.getDelayedCalls() == []


def test_logLinesThrottled() -> None:
    """Each echo is logged, but a flood is folded into a count instead of flooding the log."""
    net, client, echo = echoNetwork(EchoPolicy(rate=None, globalRate=None, logRate=5))
    port = client.listenUDP(40000, Collector())
    with capturedLogs() as events:
        for _ in range(50):
            port.write(b"x", ("192.0.2.1", 7007))
        net.pump()
        net.advance(1)
        port.write(b"x", ("192.0.2.1", 7007))
        net.pump()
    echoed = [e for e in events if e.get("log_format", "").startswith("echoed datagram")]
    assert [e["number"] for e in echoed[:2]] == [1, 2]
    assert len(echoed) == 6
    assert echoed[-1]["suppressed"] == 45
    assert echo.stats.echoed == 51


def test_sendErrorIsCounted() -> None:
    """A write that fails is counted and logged, not raised into the reactor."""
    net, client, echo = echoNetwork()

    class Failing:
        def write(self, data: bytes, addr: tuple[str, int]) -> None:
            raise OSError(101, "Network is unreachable")

    echo.transport = Failing()
    echo.datagramReceived(b"x", ("192.0.2.9", 40000))
    assert echo.stats.dropped["send-error"] == 1


def tcpEcho(**kwargs: float):  # type: ignore[no-untyped-def]
    clock = Clock()
    factory = TCPEchoFactory(clock, **kwargs)  # type: ignore[arg-type]
    return clock, factory


def connect(factory: TCPEchoFactory, host: str = "192.0.2.2"):  # type: ignore[no-untyped-def]
    address = IPv4Address("TCP", host, 40000)
    proto = factory.buildProtocol(address)
    if proto is None:
        return None, None
    transport = StringTransport(peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def test_tcpEcho() -> None:
    """TCP echo writes back each byte it receives, and logs the connection at close."""
    clock, factory = tcpEcho()
    proto, transport = connect(factory)
    proto.dataReceived(b"hello ")
    proto.dataReceived(b"world")
    assert transport.value() == b"hello world"
    clock.advance(2)
    with capturedLogs() as events:
        proto.connectionLost(None)
    assert factory.stats.bytes == 11
    assert events[-1]["bytes"] == 11 and events[-1]["duration"] == 2
    assert clock.getDelayedCalls() == []


def test_tcpBackpressure() -> None:
    """When the client stops reading (transport pauses us), we stop reading from it."""
    clock, factory = tcpEcho()
    proto, transport = connect(factory)
    assert transport.producer is proto and transport.streaming
    proto.pauseProducing()
    assert transport.producerState == "paused"
    proto.resumeProducing()
    assert transport.producerState == "producing"


def test_tcpIdleTimeout() -> None:
    """A silent connection is closed after the idle timeout; traffic resets it."""
    clock, factory = tcpEcho(idleTimeout=10)
    proto, transport = connect(factory)
    clock.advance(9)
    proto.dataReceived(b"x")
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1.5)
    assert transport.disconnected


def test_tcpConnectionLimits() -> None:
    """Connections beyond the per-host and total limits are refused."""
    clock, factory = tcpEcho(maxConnections=3, maxPerHost=2)
    first, _ = connect(factory)
    connect(factory)
    assert connect(factory)[0] is None  # third from the same host
    connect(factory, "192.0.2.3")
    assert connect(factory, "192.0.2.4")[0] is None  # over the total
    first.connectionLost(None)
    assert connect(factory, "192.0.2.4")[0] is not None


def test_tcpHalfCloseFlushesTheEcho() -> None:
    """A client that half-closes after sending still gets its echo, then the close."""
    from twisted.internet.interfaces import IHalfCloseableProtocol

    clock, factory = tcpEcho()
    proto, transport = connect(factory)
    assert IHalfCloseableProtocol.providedBy(proto)
    proto.dataReceived(b"last words")
    proto.readConnectionLost()
    assert transport.value() == b"last words"
    assert transport.disconnecting and transport.producer is None
