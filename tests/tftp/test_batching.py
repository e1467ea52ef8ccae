"""
A window in one system call (twisted_udpsuite.tftp.batching): GSO batches and their
fallback on the in-memory network, on real sockets, and in whole transfers; coalesced reads
(GRO) and the receive buffer a window needs.
"""

from __future__ import annotations

import io
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath

from tests.tftp.test_client_server import SERVER, payload, setUp
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import batching
from twisted_udpsuite.tftp import client as clientModule
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.batching import (
    UDP_GRO,
    DatagramSender,
    TransferPort,
    reserveReceiveBuffer,
    senderFor,
    splitCoalesced,
    windowBuffer,
)
from twisted_udpsuite.tftp.client import get, put
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService


class _Sink(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


def _window(count: int, blksize: int, last: int) -> list[Any]:
    """DATA packets as the engine builds them from a mapping: (header, payload) pairs."""
    data = memoryview(os.urandom(blksize * (count - 1) + last))
    return [
        (struct.pack("!HH", 3, n + 1), data[n * blksize : (n + 1) * blksize]) for n in range(count)
    ]


def _joined(packets: list[Any]) -> list[bytes]:
    return [b"".join(p) for p in packets]


def _pair(**host: Any) -> tuple[MemoryNetwork, Any, _Sink]:
    net = MemoryNetwork()
    a, b = net.addHost("192.0.2.1/24"), net.addHost("192.0.2.2/24")
    for name, value in host.items():
        setattr(a, name, value)
    sink = _Sink()
    b.listenUDP(69, sink, maxPacketSize=65536)
    port = a.listenUDP(0, DatagramProtocol(), maxPacketSize=65536)
    return net, port, sink


def test_windowInOneBatch() -> None:
    """Sixteen blocks, the last short: one sendmsg, sixteen datagrams, byte for byte."""
    net, port, sink = _pair()
    sender = senderFor(port, ("192.0.2.2", 69))
    assert sender is not None and sender.segmenting
    packets = _window(16, 1428, 100)
    sender.sendWindow(packets)
    net.pump()
    assert port.segmentedSends == sender.batches == 1
    assert sink.received == _joined(packets)


@pytest.mark.parametrize(("blksize", "batches"), [(8192, 3), (512, 1), (65464, 0)])
def test_batchesWithinTheKernelsLimits(blksize: int, batches: int) -> None:
    """A batch stays under 64 KiB and 64 segments: 16 x 8196 bytes is 3 batches (7, 7, 2);
    a block too large to pair goes alone."""
    net, port, sink = _pair()
    sender = senderFor(port, ("192.0.2.2", 69))
    assert sender is not None
    packets = _window(16, blksize, blksize)
    sender.sendWindow(packets)
    net.pump()
    assert sender.batches == port.segmentedSends == batches
    assert sink.received == _joined(packets)


def test_deviceRefusesFallsBackForGood() -> None:
    """EIO (a device that cannot segment): that window and every later one go a datagram
    per call, and nothing is lost."""
    net, port, sink = _pair(segmentationOffload=False)
    sender = senderFor(port, ("192.0.2.2", 69))
    assert sender is not None and sender.segmenting
    first, second = _window(8, 1024, 1024), _window(8, 1024, 10)
    sender.sendWindow(first)
    assert not sender.segmenting
    sender.sendWindow(second)
    net.pump()
    assert sender.batches == port.segmentedSends == 0
    assert sink.received == _joined(first) + _joined(second)


def test_kernelWithoutTheOption() -> None:
    """No UDP_SEGMENT (ENOPROTOOPT): never tried, one datagram per call."""
    net, port, sink = _pair(segmentationOption=False)
    sender = senderFor(port, ("192.0.2.2", 69))
    assert sender is not None and not sender.segmenting
    packets = _window(4, 512, 512)
    sender.sendWindow(packets)
    net.pump()
    assert sink.received == _joined(packets)


def test_batchesCarryTheSourceAddress() -> None:
    """From a wildcard socket, batches and single datagrams leave from the given local
    address (packet info), as writeFrom's answers do."""
    net = MemoryNetwork()
    a = net.addHost("192.0.2.1/24", "192.0.2.7/24")
    b = net.addHost("192.0.2.2/24")
    b.listenUDP(69, _Sink(), maxPacketSize=65536)
    port = a.listenUDP(0, DatagramProtocol(), interface="", maxPacketSize=65536)
    sender = senderFor(port, ("192.0.2.2", 69), local="192.0.2.7")
    assert sender is not None
    sender.sendWindow(_window(4, 512, 3))
    sender.send(b"\0\4\0\1")
    net.pump()
    assert port.segmentedSends == 1
    assert [r.source[0] for r in net.datagrams] == ["192.0.2.7"] * 5


def test_onlyTheLastMayBeShort() -> None:
    net, port, _ = _pair()
    sender = senderFor(port, ("192.0.2.2", 69))
    assert sender is not None
    packets = _window(3, 512, 512)
    packets[1] = (packets[1][0], packets[1][1][:10])
    with pytest.raises(ValueError):
        sender.sendWindow(packets)


def test_splitCoalesced() -> None:
    """A GRO read is cut by its segment size; without the message it is one datagram."""
    data = bytes(range(250))
    gro = [(socket.IPPROTO_UDP, UDP_GRO, struct.pack("@i", 100))]
    assert splitCoalesced(data, gro) == [data[:100], data[100:200], data[200:]]
    assert splitCoalesced(data[:100], gro) is None
    assert splitCoalesced(data, []) is None
    assert splitCoalesced(data, [(socket.IPPROTO_IP, 8, b"x" * 12)]) is None


def test_receiveBuffer() -> None:
    """Raised to hold a window; past rmem_max only by force (root), else reported short."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    wanted = windowBuffer(8192, 16)
    assert wanted > 212992  # the default cannot hold 16 x 8196 bytes
    port = host.listenUDP(0, DatagramProtocol())
    assert reserveReceiveBuffer(port, wanted) == (port.receiveBuffer, False)
    assert port.receiveBuffer >= wanted
    host.rmemMax = wanted // 4
    assert reserveReceiveBuffer(port, wanted // 2) == (port.receiveBuffer, False)
    host.mayForce = False
    small = host.listenUDP(0, DatagramProtocol())
    got, short = reserveReceiveBuffer(small, wanted)
    assert short and got == small.receiveBuffer == wanted // 2


@pytest.mark.parametrize("offload", [True, False])
@pytest.mark.parametrize(("blksize", "windowsize"), [(1428, 16), (8192, 8)])
def test_transfersBothPaths(tmp_path: Any, offload: bool, blksize: int, windowsize: int) -> None:
    """Uploads and downloads through 10% loss, duplicates and reordering, whole, with
    GSO batches (partial windows resent from the gap) and without (a device that
    cannot segment); every timer gone at the end (the dally included)."""
    net, client, root = setUp(tmp_path, loss=0.1, duplicate=0.05, reorder=0.05, seed=7)
    serverHost = net.hosts[0]
    for host in (client, serverHost):
        host.segmentationOffload = offload
    data = payload(300_001)
    options = {"blksize": blksize, "windowsize": windowsize, "retries": 20}
    net.runUntil(put(client, SERVER, data, "f.bin", **options))  # type: ignore[arg-type]
    assert root.child("f.bin").getContent() == data
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f.bin", out, **options))  # type: ignore[arg-type]
    assert out.getvalue() == data
    assert result.retransmits > 0
    if offload:
        assert client.segmentedSends > 0 and serverHost.segmentedSends > 0
    else:
        assert client.segmentedSends == serverHost.segmentedSends == 0
    net.advance(400)
    assert net.clock.getDelayedCalls() == []


def test_partialWindowResentAsABatch(tmp_path: Any) -> None:
    """The 5th block of the first window lost once: the client ACKs 4, and the server
    resends from block 5 on in one batch."""
    net, client, root = setUp(tmp_path)
    serverHost = net.hosts[0]
    data = payload(16 * 1024 + 77)
    root.child("f.bin").setContent(data)
    dropped: list[Any] = []

    def dropBlock5(record: Any) -> bool:
        if not dropped and record.data[:4] == b"\0\3\0\5":
            dropped.append(record)
            return True
        return False

    net.dropIf(dropBlock5)
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "f.bin", out, blksize=1024, windowsize=16))
    assert out.getvalue() == data
    assert dropped
    acks = [r.data for r in net.datagrams if r.data[:2] == b"\0\4"]
    assert b"\0\4\0\4" in acks  # the gap was reported at once
    # Block 5 went twice; each window (the first, the resend from 5, the rest) was a batch.
    fives = [r for r in net.datagrams if r.data[:4] == b"\0\3\0\5"]
    assert len(fives) == 2
    assert serverHost.segmentedSends >= 2
    net.advance(400)
    assert net.clock.getDelayedCalls() == []


def test_lostFinalAckOfABatchedUploadIsDallied(tmp_path: Any) -> None:
    """An upload sent in batches whose final ACK is lost: the client resends the last
    window, the dallying server ACKs it again, and the client succeeds."""
    net, client, root = setUp(tmp_path)
    data = payload(8 * 512 + 5)
    finals: list[Any] = []

    def dropFirstFinalAck(record: Any) -> bool:
        if record.data == b"\0\4\0\x09" and not finals:
            finals.append(record)
            return True
        return False

    net.dropIf(dropFirstFinalAck)
    result = net.runUntil(put(client, SERVER, data, "f.bin", windowsize=4))
    assert root.child("f.bin").getContent() == data
    assert finals and result.retransmits > 0
    assert client.segmentedSends >= 2
    net.advance(400)
    assert net.clock.getDelayedCalls() == []


# Real sockets


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_realSocketBatchAndCoalescedRead(family: int) -> None:
    """On Linux loopback: one sendmsg, the receiver with UDP_GRO reads the batch in one
    recvmsg and splits it into the same datagrams; a receiver without it gets them one by
    one. IPv4 and IPv6."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with (
        socket.socket(family, socket.SOCK_DGRAM) as tx,
        socket.socket(family, socket.SOCK_DGRAM) as gro,
        socket.socket(family, socket.SOCK_DGRAM) as plain,
    ):
        for rx in (gro, plain):
            rx.bind((host, 0))
            rx.settimeout(5)
        gro.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        packets = _window(16, 1428, 9)
        for rx in (gro, plain):
            sender = DatagramSender(tx, rx.getsockname()[:2], family=family)
            assert sender.segmenting
            sender.sendWindow(packets)
            assert sender.batches == 1
        data, ancillary, _, _ = gro.recvmsg(65536, socket.CMSG_SPACE(4))
        assert splitCoalesced(data, ancillary) == _joined(packets)
        assert [plain.recv(65536) for _ in packets] == _joined(packets)


def test_realSocketRefusalFallsBack() -> None:
    """A socket the kernel will not segment for (UDP checksums off: EINVAL) falls back to
    a datagram per call, and the window still arrives whole."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        tx.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
        sender = DatagramSender(tx, rx.getsockname())
        packets = _window(6, 1000, 1000)
        sender.sendWindow(packets)
        assert not sender.segmenting and sender.batches == 0
        assert [rx.recv(65536) for _ in packets] == _joined(packets)


def test_realSocketBatchFromAWildcard() -> None:
    """Bound to 0.0.0.0, a batch with packet info leaves from the address given."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
    ):
        tx.bind(("0.0.0.0", 0))
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        sender = DatagramSender(tx, rx.getsockname(), local="127.0.0.3")
        sender.sendWindow(_window(3, 512, 1))
        assert sender.batches == 1
        sources = {rx.recvfrom(65536)[1][0] for _ in range(3)}
        assert sources == {"127.0.0.3"}


@asynccontextmanager
async def _realServer(reactor: Any, backend: FilesystemBackend) -> AsyncIterator[Any]:
    """Our server on 127.0.0.1 (any free port) while the block runs; yields its address."""
    service = TFTPService(
        backend, ServerPolicy(rate=None), port=0, interface="127.0.0.1", reactor=reactor
    )
    service.startService()
    try:
        yield ("127.0.0.1", service.listeningPort.getHost().port)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_realClientAndServerInWindows(
    reactor: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our client and server on 127.0.0.1 at blksize 8192, windowsize 16: the download
    reads coalesced windows into a receive buffer raised to hold a window (as root, past
    rmem_max if need be)."""
    data = os.urandom(4 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    coalescing: list[TransferPort] = []
    reserved: list[tuple[int, int, bool]] = []
    original = TransferPort.receiveCoalesced

    def recordPort(self: TransferPort) -> bool:
        coalescing.append(self)
        return original(self)

    def recordBuffer(sock: Any, wanted: int) -> tuple[int, bool]:
        got, short = reserveReceiveBuffer(sock, wanted)
        reserved.append((wanted, got, short))
        return got, short

    monkeypatch.setattr(TransferPort, "receiveCoalesced", recordPort)
    monkeypatch.setattr(clientModule, "reserveReceiveBuffer", recordBuffer)
    async with _realServer(reactor, FilesystemBackend(FilePath(str(tmp_path)))) as server:
        out = io.BytesIO()
        await get(reactor, server, "big.bin", out, blksize=8192, windowsize=16).addTimeout(
            30, reactor
        )
    assert out.getvalue() == data
    assert len(coalescing) == 1 and coalescing[0].coalescedReads > 0
    [(wanted, got, short)] = reserved
    assert wanted == windowBuffer(8192, 16) and got >= wanted and not short


@pytest_twisted.ensureDeferred
async def test_realUploadInBatches(
    reactor: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our client uploads windows of 16 x 8192 bytes to our server on 127.0.0.1 as GSO
    batches; the server reads them (coalesced) and stores the file whole."""
    data = os.urandom((1 << 20) + 333)
    senders: list[DatagramSender] = []
    original = DatagramSender.sendWindow

    def recording(self: DatagramSender, packets: Any) -> None:
        senders.append(self)
        original(self, packets)

    monkeypatch.setattr(DatagramSender, "sendWindow", recording)
    backend = FilesystemBackend(FilePath(str(tmp_path)), writable=True)
    async with _realServer(reactor, backend) as server:
        await put(reactor, server, data, "up.bin", blksize=8192, windowsize=16).addTimeout(
            30, reactor
        )
    assert (tmp_path / "up.bin").read_bytes() == data
    assert senders and all(s.segmenting for s in senders) and senders[0].batches > 0


class _Recorder(DatagramProtocol):
    """Records datagrams and the destinations reported unreachable."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.unreachable: list[Any] = []
        self.waiting: Any = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        self._wake()

    def destinationUnreachable(self, addr: Any) -> None:
        self.unreachable.append(addr)
        self._wake()

    def _wake(self) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)

    def next(self, reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        self.waiting = Deferred()
        return self.waiting.addTimeout(5, reactor)


@pytest_twisted.ensureDeferred
async def test_transferPortsShareOneReader(reactor: Any) -> None:
    """Transfer ports are read through one poller: the reactor sees one reader for all,
    each port still gets its datagrams and its ICMP errors, and the poller leaves the
    reactor with the last port."""
    from zope.interface import directlyProvides

    from twisted_udpsuite.unreachable import IUnreachableReceiver

    protocols = [_Recorder(), _Recorder()]
    for protocol in protocols:
        directlyProvides(protocol, IUnreachableReceiver)
    ports = [batching.listenUDP(reactor, 0, p, "127.0.0.1") for p in protocols]
    try:
        readers = reactor.getReaders()
        pollers = [r for r in readers if isinstance(r, batching.TransferPoller)]
        assert len(pollers) == 1 and not any(p in readers for p in ports)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for n, port in enumerate(ports):
                arrived = protocols[n].next(reactor)
                tx.sendto(b"hello %d" % n, ("127.0.0.1", port.getHost().port))
                await arrived
            assert [p.received for p in protocols] == [[b"hello 0"], [b"hello 1"]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            gone = closed.getsockname()
        reported = protocols[0].next(reactor)
        ports[0].write(b"anyone?", gone)
        await reported
        assert protocols[0].unreachable == [gone]
        await ports[0].stopListening()
        assert ports[0] not in pollers[0] and ports[1] in pollers[0]
        assert pollers[0] in reactor.getReaders()
    finally:
        for port in ports:
            stopped = port.stopListening()  # (None if stopped already)
            if stopped is not None:
                await stopped
    assert ports[1] not in pollers[0]
    # The poller leaves the reactor with its last port (another test's may still dally).
    assert (pollers[0] in reactor.getReaders()) == (len(pollers[0]) > 0)


def test_pollerPassesTheReactorsEndOn() -> None:
    """At reactor shutdown the poller is told the connection is lost, and so is every
    port read through it (its socket closed, its protocol stopped)."""
    from twisted.internet import reactor as globalReactor
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    protocol = _Recorder()
    stopped: list[bool] = []
    protocol.stopProtocol = lambda: stopped.append(True)  # type: ignore[method-assign]
    port = batching.listenUDP(globalReactor, 0, protocol, "127.0.0.1")
    poller = batching._pollerFor(globalReactor)
    assert port in poller
    poller.connectionLost(Failure(ConnectionLost()))
    assert port not in poller and stopped == [True] and not port.connected


@pytest_twisted.ensureDeferred
async def test_portClosedByItsOwnDatagram(reactor: Any) -> None:
    """A protocol that stops listening on the datagram it reads (a client whose transfer
    ended) leaves the poller cleanly, also when it is the poller's only port."""
    from twisted.internet.defer import Deferred

    closed: Deferred[None] = Deferred()

    class Closing(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            stopped = self.transport.stopListening()
            assert stopped is not None
            stopped.chainDeferred(closed)

    errors: list[Any] = []
    from twisted.logger import globalLogPublisher

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        port = batching.listenUDP(reactor, 0, Closing(), "127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"bye", ("127.0.0.1", port.getHost().port))
            await closed.addTimeout(5, reactor)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert errors == []
    assert port not in batching._pollerFor(reactor)


class _FailingPort:
    """A transfer port whose read raises (a socket error no read loop handles)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def doRead(self) -> None:
        raise OSError(9, "Bad file descriptor")

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)
        self.socket.close()


class _FDSet:
    def __init__(self) -> None:
        self.readers: list[Any] = []

    def addReader(self, reader: Any) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.remove(reader)


@pytest.mark.parametrize("others", [0, 1])
def test_pollerClosesAPortWhoseReadRaises(others: int) -> None:
    """A port whose read raises is logged, taken out of the poller and told its connection
    is lost, as the reactor does with a reader; the other ports read on."""
    from twisted.logger import globalLogPublisher

    reactor = _FDSet()
    poller = batching.TransferPoller(reactor)  # type: ignore[arg-type]
    failing = _FailingPort()
    healthy = [_FailingPort() for _ in range(others)]
    for port in [failing, *healthy]:
        poller.add(port)  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"x", failing.socket.getsockname())  # only the failing port is ready
    failures: list[Any] = []
    observer = failures.append
    globalLogPublisher.addObserver(observer)
    try:
        poller.doRead()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [e for e in failures if e.get("log_failure") is not None]
    assert failing not in poller and len(failing.lost) == 1
    assert all(port in poller and not port.lost for port in healthy)
    assert (poller in reactor.readers) == bool(others)
    for port in healthy:
        port.socket.close()


def test_notLinuxNoSegmentation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Elsewhere than Linux option 103 is not UDP_SEGMENT: never tried on a real socket
    (nor on a non-IP one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert batching.segmentationAvailable(sock)
        monkeypatch.setattr(batching.sys, "platform", "freebsd14")
        assert not batching.segmentationAvailable(sock)
    monkeypatch.undo()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        assert not batching.segmentationAvailable(unix)


@pytest.mark.parametrize("mayForce", [True, False])
def test_clientSizesItsBufferToTheWindow(tmp_path: Any, mayForce: bool) -> None:
    """A windowed download raises the client's receive buffer to hold the negotiated
    window, past rmem_max where it may (root); where it may not, it says so in a warning,
    and the download still completes."""
    from twisted.logger import LogLevel, capturedLogs

    net, client, root = setUp(tmp_path)
    client.rmemMax = 150_000
    client.mayForce = mayForce
    data = payload(200_000)
    root.child("f.bin").setContent(data)
    ports: list[Any] = []
    original = client.listenUDP

    def recording(*args: Any, **kwargs: Any) -> Any:
        ports.append(original(*args, **kwargs))
        return ports[-1]

    client.listenUDP = recording  # type: ignore[method-assign]
    out = io.BytesIO()
    with capturedLogs() as events:
        net.runUntil(get(client, SERVER, "f.bin", out, blksize=8192, windowsize=16))
    assert out.getvalue() == data
    [port] = ports
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    if mayForce:
        assert port.receiveBuffer >= windowBuffer(8192, 16) and warnings == []
    else:
        assert port.receiveBuffer == 2 * 150_000
        [warning] = warnings
        assert warning["wanted"] == windowBuffer(8192, 16) and warning["got"] == 2 * 150_000
    net.advance(400)
    assert net.clock.getDelayedCalls() == []


def test_receiveBufferNotLowered() -> None:
    """Short of rmem_max, the buffer is raised as far as it goes, and put back if asking
    lowered it (rmem_max below the default: as far back as the kernel allows)."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    host.mayForce = False
    host.rmemMax = 120_000  # 2 x 120000 > the 212992 default
    port = host.listenUDP(0, DatagramProtocol())
    assert reserveReceiveBuffer(port, 10**6) == (240_000, True)
    host.rmemMax = 50_000
    port = host.listenUDP(0, DatagramProtocol())
    assert reserveReceiveBuffer(port, 10**6) == (100_000, True)
