"""The TFTP server on the in-memory network: transfers, policy, errors, strays, limits, logs."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import client, errors
from twisted_udpsuite.tftp.backend import FilesystemBackend, IBackend, IReader
from twisted_udpsuite.tftp.options import ServerOptionLimits
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.transfer import EngineSettings
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    WriteRequest,
    encodeAck,
    parsePacket,
)

SERVER = ("192.0.2.1", 69)


class _Raw(DatagramProtocol):
    """A scripted peer: records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[Any, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((parsePacket(datagram), addr))

    def send(self, packet: Any, addr: tuple[str, int] = SERVER) -> None:
        self.transport.write(packet if isinstance(packet, bytes) else packet.toBytes(), addr)


class _World:
    def __init__(
        self,
        root: FilePath,
        *,
        policy: ServerPolicy | None = None,
        backend: Any = None,
        **net: Any,
    ) -> None:
        self.net = MemoryNetwork(**net)
        self.serverHost = self.net.addHost("192.0.2.1/24")
        self.clientHost = self.net.addHost("192.0.2.2/24")
        self.otherHost = self.net.addHost("192.0.2.3/24")
        self.backend = backend if backend is not None else FilesystemBackend(root, writable=True)
        self.protocol = TFTPServerProtocol(
            self.backend, policy or ServerPolicy(rate=None), reactor=self.serverHost
        )
        self.port = self.serverHost.listenUDP(69, self.protocol, maxPacketSize=65536)

    def get(self, name: str, **kw: Any) -> tuple[bytes, client.TransferResult]:
        sink = io.BytesIO()
        result = self.net.runUntil(client.get(self.clientHost, SERVER, name, sink, **kw))
        return sink.getvalue(), result

    def put(self, data: bytes, name: str, **kw: Any) -> client.TransferResult:
        return self.net.runUntil(client.put(self.clientHost, SERVER, data, name, **kw))

    def raw(self, host: Any = None, port: int = 0) -> _Raw:
        peer = _Raw()
        (host or self.clientHost).listenUDP(port, peer, maxPacketSize=65536)
        return peer

    def settle(self) -> None:
        """Run out every timer (dallying, retries); then nothing may be left."""
        self.net.advance(400)
        assert self.protocol.sessions == {}
        assert self.net.clock.getDelayedCalls() == []
        assert [p for p in self.serverHost.sockets if p.listening] == [self.port]


@pytest.fixture
def root(tmp_path: Any) -> FilePath:
    return FilePath(str(tmp_path))


def _file(root: FilePath, name: str, size: int) -> bytes:
    data = os.urandom(size)
    root.child(name).setContent(data)
    return data


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 4096 + 7])
def test_downloadSizesOnLossyNetwork(root: FilePath, size: int) -> None:
    data = _file(root, "f.bin", size)
    world = _World(root, seed=size, loss=0.2, duplicate=0.05, reorder=0.05, latency=0.002)
    got, result = world.get("f.bin", retries=30)
    assert got == data
    world.settle()


@pytest.mark.parametrize(("blksize", "windowsize"), [(512, 1), (1428, 8), (8192, 4), (65464, 2)])
def test_downloadOptions(root: FilePath, blksize: int, windowsize: int) -> None:
    data = _file(root, "f.bin", 3 * blksize)  # an exact multiple: a final empty DATA
    world = _World(root, seed=7, loss=0.1, latency=0.001)
    got, result = world.get("f.bin", blksize=blksize, windowsize=windowsize, retries=30)
    assert got == data
    assert result.options.blksize == blksize
    assert result.options.tsize == len(data)
    world.settle()


@pytest.mark.parametrize("windowsize", [1, 16])
def test_uploadOnLossyNetwork(root: FilePath, windowsize: int) -> None:
    data = os.urandom(50_000)
    world = _World(root, seed=3, loss=0.2, duplicate=0.05, reorder=0.05, latency=0.002)
    world.put(data, "up.bin", blksize=1024, windowsize=windowsize, retries=30)
    world.settle()
    assert root.child("up.bin").getContent() == data
    assert [c for c in root.listdir() if c.endswith(".part")] == []


@pytest.mark.parametrize("rollover", [0, 1])
def test_downloadPastBlock65535(root: FilePath, rollover: int) -> None:
    data = _file(root, "big.bin", 600_000)  # 75000 blocks of 8 bytes
    policy = ServerPolicy(rate=None, rollover=rollover)
    world = _World(root, policy=policy, seed=1)
    got, _ = world.get("big.bin", blksize=8, windowsize=16)
    assert got == data
    world.settle()


def test_uploadPastBlock65535(root: FilePath) -> None:
    data = os.urandom(600_000)
    world = _World(root, seed=1)
    world.put(data, "big.bin", blksize=8, windowsize=16)
    world.settle()
    assert root.child("big.bin").getContent() == data


def test_netasciiBothWays(root: FilePath) -> None:
    text = b"line\nbare\rcrlf\r\n" * 200 + b"\r"
    root.child("t.txt").setContent(text)
    world = _World(root, seed=2, loss=0.1)
    got, _ = world.get("t.txt", mode="netascii", blksize=64, retries=30)
    assert got == text
    world.put(text, "u.txt", mode="netascii", blksize=64, retries=30)
    world.settle()
    assert root.child("u.txt").getContent() == text


def test_netasciiOnTheWire(root: FilePath) -> None:
    root.child("t.txt").setContent(b"a\nb\r")
    world = _World(root)
    peer = world.raw()
    peer.send(ReadRequest(b"t.txt", "netascii"))
    world.net.pump()
    assert peer.received[0][0] == Data(1, b"a\r\nb\r\0")


def test_backslashAndLeadingSlash(root: FilePath) -> None:
    root.child("boot").createDirectory()
    data = _file(root.child("boot"), "pxelinux.0", 1000)
    world = _World(root)
    assert world.get("\\boot\\pxelinux.0")[0] == data
    assert world.get("/boot/pxelinux.0")[0] == data
    world.settle()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("missing", errors.FileNotFound),
        ("../escape", errors.AccessViolation),
        ("sub/../../x", errors.AccessViolation),
        ("sub", errors.AccessViolation),
        ("fifo", errors.AccessViolation),
        ("link", errors.AccessViolation),
    ],
)
def test_readRefusals(root: FilePath, tmp_path: Any, name: str, error: type) -> None:
    root.child("sub").createDirectory()
    os.mkfifo(root.child("fifo").path)
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.write_bytes(b"secret")
    os.symlink(str(outside), root.child("link").path)
    world = _World(root)
    d = client.get(world.clientHost, SERVER, name, io.BytesIO())
    with pytest.raises(error):
        world.net.runUntil(d)
    world.settle()


def test_unreadableIsAccessViolation(root: FilePath) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    _file(root, "private", 10)
    os.chmod(root.child("private").path, 0)
    world = _World(root)
    with pytest.raises(errors.AccessViolation):
        world.get("private")


def test_uploadPolicy(root: FilePath) -> None:
    _file(root, "exists", 10)
    world = _World(root, backend=FilesystemBackend(root))
    with pytest.raises(errors.AccessViolation):
        world.put(b"x", "new")
    world = _World(root, backend=FilesystemBackend(root, writable=True))
    with pytest.raises(errors.FileExists):
        world.put(b"x", "exists")
    world = _World(
        root, backend=FilesystemBackend(root, writable=True, allowCreate=False, allowOverwrite=True)
    )
    with pytest.raises(errors.AccessViolation):
        world.put(b"x", "new")
    world.put(b"replaced", "exists")
    assert root.child("exists").getContent() == b"replaced"
    world = _World(root, backend=FilesystemBackend(root, writable=True))
    with pytest.raises(errors.FileNotFound):
        world.put(b"x", "nodir/new")
    world.settle()


def test_uploadSizeLimits(root: FilePath) -> None:
    limits = ServerOptionLimits(maxUploadSize=1000)
    backend = FilesystemBackend(root, writable=True, maxUploadSize=1000)
    world = _World(root, policy=ServerPolicy(rate=None, limits=limits), backend=backend)
    with pytest.raises(errors.DiskFull):
        world.put(b"x" * 2000, "big")  # refused on tsize, before any data
    stream = io.BufferedReader(io.BytesIO(b"y" * 5000))  # size unknown: no tsize
    stream.seekable = lambda: False  # type: ignore[method-assign]
    with pytest.raises(errors.DiskFull):
        world.put(stream, "big2")
    world.put(b"z" * 1000, "ok")
    world.settle()
    assert sorted(root.listdir()) == ["ok"]


def test_interruptedUploadKeepsOldFile(root: FilePath) -> None:
    root.child("f").setContent(b"old")
    backend = FilesystemBackend(root, writable=True, allowOverwrite=True)
    world = _World(root, backend=backend)
    peer = world.raw()
    peer.send(WriteRequest(b"f", "octet"))
    world.net.pump()
    (ack, tid) = peer.received[-1]
    assert ack == Ack(0)
    peer.send(Data(1, b"n" * 512), tid)
    world.net.pump()
    peer.send(Error(0, "bye"), tid)
    world.settle()
    assert root.child("f").getContent() == b"old"
    assert root.listdir() == ["f"]


def test_mailModeAndMalformed(root: FilePath) -> None:
    _file(root, "f", 10)
    world = _World(root)
    peer = world.raw()
    peer.send(ReadRequest(b"f", "mail"))
    peer.send(ReadRequest(b"f", "ebcdic"))
    for junk in (
        b"",
        b"\x00",
        b"\x00\x01",
        b"\x00\x01f\x00",
        b"\x00\x01\x00octet\x00",
        b"\x00\x07abc",
        b"\xff\xff\xff\xff",
        b"\x00\x01f\x00octet\x00blksize\x00",
    ):
        peer.send(junk)
    world.net.pump()
    codes = [p.code for p, _ in peer.received]
    assert codes[:2] == [4, 4]
    assert "Mail" in peer.received[0][0].message
    assert set(codes) == {4}
    assert world.get("f")[0]  # still serving
    world.settle()


def test_ignoresBroadcastAndPortZero(root: FilePath) -> None:
    _file(root, "f", 10)
    world = _World(root)
    before = len(world.net.datagrams)
    for addr in (("255.255.255.255", 1000), ("224.0.0.1", 1000), ("192.0.2.2", 0), ("0.0.0.0", 5)):
        world.protocol.datagramReceived(ReadRequest(b"f", "octet").toBytes(), addr)
    world.net.pump()
    assert len(world.net.datagrams) == before
    world.settle()


def test_repeatedRequestIsOneSession(root: FilePath) -> None:
    data = _file(root, "f", 2000)
    world = _World(root)
    peer = world.raw()
    peer.send(ReadRequest(b"f", "octet"))
    peer.send(ReadRequest(b"f", "octet"))
    world.net.pump()
    assert len(world.protocol.sessions) == 1
    assert [p for p, _ in peer.received] == [Data(1, data[:512])]
    world.protocol.stopProtocol()
    world.settle()


def test_strayGetsErrorFiveAndTransferGoesOn(root: FilePath) -> None:
    data = _file(root, "f", 100_000)
    world = _World(root, latency=0.001)
    stray = world.raw(world.otherHost)
    sink = io.BytesIO()
    d = client.get(world.clientHost, SERVER, "f", sink, blksize=512)
    world.net.advance(0.01)
    (session,) = world.protocol.sessions.values()
    sessionPort = session.transport.getHost().port
    stray.send(encodeAck(1), ("192.0.2.1", sessionPort))
    stray.send(b"\x00\x05\x00\x00stop\x00", ("192.0.2.1", sessionPort))
    world.net.runUntil(d)
    assert sink.getvalue() == data
    assert [(p.code, a[1]) for p, a in stray.received] == [(5, sessionPort)] * 2
    world.settle()


def test_perClientAndTotalLimits(root: FilePath) -> None:
    _file(root, "f", 100_000)
    world = _World(root, policy=ServerPolicy(rate=None, maxTransfersPerClient=1, maxTransfers=2))
    first, second, third = world.raw(), world.raw(), world.raw(world.otherHost)
    first.send(ReadRequest(b"f", "octet"))
    second.send(ReadRequest(b"f", "octet"))
    third.send(ReadRequest(b"f", "octet"))
    world.net.pump()
    assert isinstance(first.received[0][0], Data)
    assert "Too many" in second.received[0][0].message
    assert isinstance(third.received[0][0], Data)
    fourth = world.raw(world.otherHost)
    fourth.send(ReadRequest(b"f", "octet"))
    world.net.pump()
    assert "busy" in fourth.received[0][0].message
    world.settle()


def test_requestRateLimit(root: FilePath) -> None:
    _file(root, "f", 10)
    world = _World(root, policy=ServerPolicy(rate=1.0, burst=2))
    peer = world.raw()
    for _ in range(5):
        peer.send(ReadRequest(b"missing", "octet"))
    world.net.pump()
    assert len(peer.received) == 2
    world.settle()


def test_pxeAbortAfterOackIsQuiet(root: FilePath) -> None:
    _file(root, "pxelinux.0", 3000)
    world = _World(root)
    peer = world.raw()
    with capturedLogs() as events:
        peer.send(ReadRequest(b"pxelinux.0", "octet", {"tsize": "0", "blksize": "1468"}))
        world.net.pump()
        oack, tid = peer.received[0]
        assert oack == OptionAck({"tsize": "3000", "blksize": "1468"})
        peer.send(Error(8, "tsize only"), tid)
        world.net.pump()
        assert world.protocol.sessions == {}
    (event,) = [e for e in events if e.get("tftpTransfer")]
    assert event["outcome"] == "aborted-after-oack"
    assert event["log_level"].name == "debug"
    assert len(peer.received) == 1
    world.settle()


def test_oneLogEventPerTransfer(root: FilePath) -> None:
    _file(root, "f", 5000)
    world = _World(root)
    with capturedLogs() as events:
        world.get("f", blksize=1024)
        with pytest.raises(errors.FileNotFound):
            world.get("nope")
        world.settle()
    transfers = [e for e in events if e.get("tftpTransfer")]
    assert [(e["file"], e["outcome"]) for e in transfers] == [
        ("f", "completed"),
        ("nope", "failed"),
    ]
    ok = transfers[0]
    assert ok["bytes"] == 5000 and ok["direction"] == "RRQ"
    assert ok["options"] == {"blksize": "1024", "tsize": "5000"}
    assert ok["peer"][0] == "192.0.2.2"


def test_wrqTsizeEchoed(root: FilePath) -> None:
    world = _World(root)
    peer = world.raw()
    peer.send(WriteRequest(b"w", "octet", {"tsize": "3", "blksize": "16"}))
    world.net.pump()
    oack, tid = peer.received[0]
    assert oack == OptionAck({"tsize": "3", "blksize": "16"})
    peer.send(Data(1, b"abc"), tid)
    world.net.pump()
    assert peer.received[-1][0] == Ack(1)
    world.settle()
    assert root.child("w").getContent() == b"abc"


def _oneBlockUpload(world: _World) -> tuple[_Raw, tuple[str, int]]:
    """A client that uploads C{w} in one block (b"end"): sent, not yet delivered."""
    peer = world.raw()
    peer.send(WriteRequest(b"w", "octet"))
    world.net.pump()
    tid = peer.received[0][1]
    peer.send(Data(1, b"end"), tid)
    return peer, tid


def test_lostFinalAckOfUploadIsResent(root: FilePath) -> None:
    world = _World(root)
    peer, tid = _oneBlockUpload(world)
    world.net.pump()
    peer.send(Data(1, b"end"), tid)
    world.net.pump()
    assert [p for p, _ in peer.received] == [Ack(0), Ack(1), Ack(1)]
    world.settle()


def test_idlePeerTimesOutWithoutLeaks(root: FilePath) -> None:
    _file(root, "f", 5000)
    world = _World(root, policy=ServerPolicy(rate=None, retries=3))
    peer = world.raw()
    peer.send(ReadRequest(b"f", "octet"))
    world.net.advance(30)
    assert len(peer.received) == 4  # DATA 1 and three resends
    world.settle()


def test_stopAbortsSessions(root: FilePath) -> None:
    _file(root, "f", 50_000)
    world = _World(root, latency=0.001)
    d = client.get(world.clientHost, SERVER, "f", io.BytesIO())
    world.net.advance(0.01)
    assert world.protocol.sessions
    with capturedLogs() as events:
        world.port.stopListening()
    with pytest.raises(errors.TFTPError):
        world.net.runUntil(d)
    world.net.advance(60)
    assert world.protocol.sessions == {}
    assert world.net.clock.getDelayedCalls() == []
    (event,) = [e for e in events if e.get("tftpTransfer")]
    assert (event["outcome"], event["reason"]) == ("cut", "Server shutting down")


@implementer(IReader)
class _Generated:
    def __init__(self, clock: Any, data: bytes) -> None:
        self._clock = clock
        self._data = io.BytesIO(data)
        self.size = len(data)
        self.closed = False

    def read(self, n: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._clock.callLater(0.001, d.callback, self._data.read(n))
        return d

    def close(self) -> None:
        self.closed = True


@implementer(IBackend)
class _AppBackend:
    """Generated content per client, answering late: the PXE-config-per-MAC use case."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.readers: list[_Generated] = []

    def openRead(self, name: bytes, peer: Any) -> Deferred[Any]:
        if name != b"pxe.cfg":
            return _failLater(self.clock)
        reader = _Generated(self.clock, f"config for {peer[0]}\n".encode() * 100)
        self.readers.append(reader)
        d: Deferred[Any] = Deferred()
        self.clock.callLater(0.01, d.callback, reader)
        return d

    def openWrite(self, name: bytes, peer: Any, size: Any) -> Any:
        raise RuntimeError("boom")


def _failLater(clock: Any) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    clock.callLater(0.01, d.errback, errors.FileNotFound("no such config"))
    return d


def test_asynchronousBackend(root: FilePath) -> None:
    backend = _AppBackend(None)
    world = _World(root, backend=backend)
    backend.clock = world.serverHost
    got, _ = world.get("pxe.cfg", blksize=1468)
    assert got == b"config for 192.0.2.2\n" * 100
    assert backend.readers[0].closed
    with pytest.raises(errors.FileNotFound, match="no such config"):
        world.get("other")
    with capturedLogs() as events:
        with pytest.raises(errors.TFTPError, match="Cannot open"):
            world.put(b"x", "up")
    assert any(e.get("log_failure") for e in events)
    world.settle()


def test_reflectionBudgetForSilentPeers(root: FilePath) -> None:
    """A (possibly spoofed) requester that never answers gets few resends, whatever retries."""
    _file(root, "f", 100_000)
    world = _World(root, policy=ServerPolicy(rate=None, retries=10, unansweredRetries=2))
    peer = world.raw()
    peer.send(ReadRequest(b"f", "octet", {"blksize": "1428"}))
    world.net.advance(60)
    assert [type(p).__name__ for p, _ in peer.received] == ["OptionAck"] * 3
    world.settle()


def test_wrqOackNotResentOnTimerButOnRepeatedRequest(root: FilePath) -> None:
    """
    curl reads its next chunk into block 1 for every OACK it gets: an OACK resent while its
    DATA 1 is lost would store the file without its first block. So the OACK of a WRQ is
    resent only when the client repeats the WRQ, never on our timer.
    """
    world = _World(root)
    peer = world.raw()
    request = WriteRequest(b"w", "octet", {"blksize": "16"})
    peer.send(request)
    world.net.pump()
    oack, tid = peer.received[0]
    assert isinstance(oack, OptionAck)
    world.net.advance(3)
    assert len(peer.received) == 1  # no OACK resent on the timer
    peer.send(request)  # the client repeats its WRQ: the same session answers again
    world.net.pump()
    assert [type(p).__name__ for p, _ in peer.received] == ["OptionAck"] * 2
    assert len(world.protocol.sessions) == 1
    peer.send(Data(1, b"short"), tid)
    world.net.pump()
    assert peer.received[-1][0] == Ack(1)
    world.settle()
    assert root.child("w").getContent() == b"short"


def test_lostFinalAckOfAnUploadIsSentAgainAfterCurlsWait(root: FilePath) -> None:
    """
    The final ACK of an upload is lost; the client resends its last DATA only after its
    own per-block timeout: curl 7.88 with no C{--max-time}, 72 s (its C{tftp_set_timeouts}:
    3600 s over 50 tries), checked by C{time()} in whole seconds, so up to 74 s. The server
    is still dallying and ACKs it again.
    """
    world = _World(root)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet"))
    world.net.pump()
    [(ack0, tid)] = peer.received
    assert ack0 == Ack(0)
    lost: list[bytes] = []
    world.net.dropIf(lambda r: r.data == Ack(1).toBytes() and not lost and not lost.append(r.data))
    peer.send(Data(1, b"last and only block"), tid)
    world.net.pump()
    assert len(peer.received) == 1 and lost  # the ACK was lost
    world.net.advance(74.0)
    peer.send(Data(1, b"last and only block"), tid)
    world.net.pump()
    assert peer.received[-1] == (Ack(1), tid)
    assert root.child("up.bin").getContent() == b"last and only block"
    world.settle()


def test_dallyingUploadsDoNotCountAsTransfers(root: FilePath) -> None:
    """Finished uploads whose ports still dally leave room for new transfers."""
    world = _World(root, policy=ServerPolicy(rate=None, maxTransfers=1, maxTransfersPerClient=1))
    for i in range(3):
        world.put(b"x" * 10, f"up{i}.bin")
    assert len(world.protocol.sessions) == 3  # all three still dallying
    assert sorted(root.listdir()) == ["up0.bin", "up1.bin", "up2.bin"]
    world.settle()


def test_wrqWaitsForCurlsLateResendOfALostData1(root: FilePath) -> None:
    """
    After our OACK curl sends DATA 1 and, if it is lost, sends it again only after 72 s
    (and never in answer to an OACK, which it takes for a go-ahead to the next chunk). With
    a blksize granted (so ACK 0 would not mean the same), the session waits silently for
    it, far past its retry budget (which ran out at 48 s).
    """
    world = _World(root)
    peer = world.raw()
    options = {"tsize": "1500", "blksize": "1024", "timeout": "6"}
    peer.send(WriteRequest(b"up.bin", "octet", options))
    world.net.pump()
    oack, tid = peer.received[0]
    assert oack == OptionAck(options)
    data = os.urandom(1500)
    world.net.dropIf(lambda r: r.data[:4] == b"\x00\x03\x00\x01" and r.time < 1)
    peer.send(Data(1, data[:1024]), tid)  # lost
    world.net.advance(74)
    assert len(peer.received) == 1  # nothing sent meanwhile: no OACK, no ACK 0
    assert len(world.protocol.sessions) == 1
    peer.send(Data(1, data[:1024]), tid)  # curl's own resend
    world.net.pump()
    assert peer.received[-1] == (Ack(1), tid)
    peer.send(Data(2, data[1024:]), tid)
    world.net.pump()
    assert peer.received[-1] == (Ack(2), tid)
    assert root.child("up.bin").getContent() == data
    world.settle()


class _CurlUploader(_Raw):
    """Uploads as curl does: DATA n again at once on an ACK it did not expect."""

    def __init__(self, data: bytes, blksize: int = 512) -> None:
        super().__init__()
        self.blocks = [data[i : i + blksize] for i in range(0, len(data) + 1, blksize)]
        self.sent = 0  # the block last sent

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        super().datagramReceived(datagram, addr)
        packet = parsePacket(datagram)
        if isinstance(packet, OptionAck) or (isinstance(packet, Ack) and self.sent == 0):
            self.sent = 1  # a go-ahead (an OACK, or ACK 0 if the OACK was lost)
        elif isinstance(packet, Ack) and packet.block == self.sent:
            if self.sent == len(self.blocks):
                return
            self.sent += 1
        self.send(Data(self.sent, self.blocks[self.sent - 1]), addr)


def test_wrqNudgesCurlWithAck0WhenOnlyDefaultsAreGranted(root: FilePath) -> None:
    """
    curl's options (tsize, blksize 512, timeout 6) grant nothing ACK 0 would not: so a lost
    DATA 1 is nudged with ACK 0 on our timer, and curl sends it again at once (instead of
    72 s later). The OACK itself is never resent (curl would shift the file by a block).
    """
    data = os.urandom(1300)
    world = _World(root)
    peer = _CurlUploader(data)
    world.clientHost.listenUDP(0, peer, maxPacketSize=65536)
    world.net.dropIf(lambda r: r.data[:4] == b"\x00\x03\x00\x01" and r.time < 0.5)
    peer.send(WriteRequest(b"up.bin", "octet", {"tsize": "1300", "blksize": "512", "timeout": "6"}))
    world.net.advance(5)
    assert root.child("up.bin").getContent() == data
    kinds = [p for p, _ in peer.received]
    assert sum(isinstance(p, OptionAck) for p in kinds) == 1
    assert 1 <= kinds.count(Ack(0)) <= 3
    world.settle()


def test_ack0NudgesAreFewAndTheWaitStillEnds(root: FilePath) -> None:
    """A client that never sends DATA 1 gets the OACK, at most 3 ACK 0s, and then silence."""
    world = _World(root)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet", {"tsize": "10", "blksize": "512"}))
    world.net.advance(ServerPolicy.firstDataWait + 5)
    assert [p for p, _ in peer.received][1:] == [Ack(0)] * ServerPolicy.unansweredRetries
    assert world.protocol.sessions == {}
    world.settle()


def test_lostOackThenAck0MeansDefaults(root: FilePath) -> None:
    """A client that never got the OACK takes ACK 0 for a refusal and sends 512-byte blocks."""
    data = os.urandom(1100)
    world = _World(root)
    peer = _CurlUploader(data)
    world.clientHost.listenUDP(0, peer, maxPacketSize=65536)
    world.net.dropIf(lambda r: r.data[:2] == b"\x00\x06")  # every OACK
    peer.send(WriteRequest(b"up.bin", "octet", {"tsize": "1100", "blksize": "512"}))
    world.net.advance(5)
    assert root.child("up.bin").getContent() == data
    world.settle()


def test_noNudgeWhenWindowsizeGranted(root: FilePath) -> None:
    """windowsize 4 granted: ACK 0 would make a client that missed the OACK send lock-step."""
    world = _World(root)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet", {"windowsize": "4"}))
    world.net.advance(30)
    assert [type(p) for p, _ in peer.received] == [OptionAck]
    world.settle()


def test_finalAckOfAnUploadIsSentTwice(root: FilePath) -> None:
    """
    The final ACK goes out again once, unasked, a round trip or two later: if the first is
    lost, curl would send its last DATA again only after 72 s.
    """
    world = _World(root)
    peer, tid = _oneBlockUpload(world)
    world.net.advance(10)
    assert [p for p, _ in peer.received] == [Ack(0), Ack(1), Ack(1)]
    assert root.child("w").getContent() == b"end"
    world.settle()


def test_lateData1IsNoRoundTripSample(root: FilePath) -> None:
    """
    curl's DATA 1, resent 72 s after the OACK, is not a 72 s round trip: taken as one, it
    pinned the timeout at its maximum (curl asks for 6 s), so every later loss in the
    upload cost 12 s instead of a fraction of a second.
    """
    world = _World(root, latency=0.001)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet", {"blksize": "1024", "timeout": "6"}))
    world.net.advance(0.01)
    tid = peer.received[0][1]
    world.net.advance(73)  # DATA 1 was lost; curl sends it again
    peer.send(Data(1, b"a" * 1024), tid)
    world.net.advance(0.01)
    peer.send(Data(2, b"b" * 1024), tid)  # answered at once: a true round trip
    world.net.advance(0.01)
    assert [p for p, _ in peer.received][1:] == [Ack(1), Ack(2)]
    world.net.advance(0.15)  # DATA 3 was lost: ACK 2 again, soon (not after 12 s)
    assert [p for p, _ in peer.received][3:] == [Ack(2)]
    peer.send(Data(3, b"end"), tid)
    world.net.advance(0.01)
    assert root.child("up.bin").getContent() == b"a" * 1024 + b"b" * 1024 + b"end"
    world.settle()


def test_wrqWaitForData1IsBoundedAndCounted(root: FilePath) -> None:
    """The silent wait counts as a transfer, and ends after firstDataWait, sending nothing."""
    policy = ServerPolicy(rate=None, maxTransfersPerClient=1, firstDataWait=100.0)
    world = _World(root, policy=policy)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet", {"blksize": "1024"}))
    world.net.advance(50)
    other = world.raw()
    other.send(WriteRequest(b"other.bin", "octet"))
    world.net.pump()
    assert isinstance(other.received[0][0], Error)  # the waiting upload still counts
    peer.send(WriteRequest(b"up.bin", "octet", {"blksize": "1024"}))  # repeated: OACK again
    world.net.advance(99)
    assert [type(p).__name__ for p, _ in peer.received] == ["OptionAck"] * 2
    assert len(world.protocol.sessions) == 1
    world.net.advance(2)  # 100 s after the last OACK
    assert world.protocol.sessions == {}
    assert len(peer.received) == 2
    assert root.listdir() == []
    world.settle()


class _AtftpLikeReceiver(DatagramProtocol):
    """
    Downloads as Debian's atftp 0.8 client does (tftp_file.c with Debian's patch "Improve
    algorithm in case of packet loss or duplication"): each new block is ACKed; a repeated
    block gets one extra ACK, and further copies are ignored; its own timer (5 s, restarted
    by every packet it receives, ignored ones too) resends the last ACK.
    """

    def __init__(self, clock: Any, name: bytes) -> None:
        self.clock = clock
        self.name = name
        self.tid: tuple[str, int] = SERVER
        self.last = 0
        self.extraSent = False
        self.data = bytearray()
        self.done = False
        self.timer: Any = None

    def startProtocol(self) -> None:
        self.transport.write(ReadRequest(self.name, "octet").toBytes(), SERVER)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None if self.done else self.clock.callLater(5.0, self._timedOut)

    def _timedOut(self) -> None:
        self.timer = None
        self.transport.write(Ack(self.last).toBytes(), self.tid)
        self._arm()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        packet = parsePacket(datagram)
        if self.tid == SERVER:
            self.tid = addr
        if self.done or not isinstance(packet, Data):
            return
        if packet.block == self.last + 1:
            self.data += packet.data
            self.last += 1
            self.extraSent = False
            self.done = len(packet.data) < 512
        elif packet.block == self.last and not self.extraSent:
            self.extraSent = True
        else:
            self._arm()
            return
        self.transport.write(Ack(self.last).toBytes(), self.tid)
        self._arm()


def test_downloadToAClientThatAnswersRepeatsOnlyOnItsOwnTimer(root: FilePath) -> None:
    """
    The ACK of block 3 and the one extra ACK that atftp gives a repeated DATA 3 are both
    lost. atftp then ignores DATA 3 until 5 s pass without any packet: resends capped at
    1 s apart never let that happen, and the server gave up while atftp waited. The
    resends now back off to QUIET_GAP, and the download completes.
    """
    data = _file(root, "f", 512 * 5 + 100)
    world = _World(root, latency=0.001)
    acks: list[bytes] = []
    ack3 = Ack(3).toBytes()
    world.net.dropIf(lambda r: r.data == ack3 and len(acks) < 2 and not acks.append(r.data))
    peer = _AtftpLikeReceiver(world.clientHost, b"f")
    world.clientHost.listenUDP(0, peer, maxPacketSize=65536)
    world.net.advance(60)
    assert len(acks) == 2
    assert peer.done and bytes(peer.data) == data
    world.settle()


def test_newRequestFromADallyingUploadsPortIsANewTransfer(root: FilePath) -> None:
    """A client that reuses its port right after an upload is not taken for a repeat."""
    _file(root, "f", 100)
    world = _World(root)
    peer = world.raw()
    peer.send(WriteRequest(b"up.bin", "octet"))
    world.net.pump()
    tid = peer.received[0][1]
    peer.send(Data(1, b"done"), tid)
    world.net.pump()
    assert peer.received[-1] == (Ack(1), tid)
    peer.send(ReadRequest(b"f", "octet"))  # same client port, a new request
    world.net.pump()
    packet, newTid = peer.received[-1]
    assert isinstance(packet, Data) and packet.block == 1 and newTid != tid
    peer.send(Ack(1), newTid)
    world.settle()


def test_dallyingUploadsAreCapped(root: FilePath) -> None:
    """Past maxDallying finished uploads, the oldest stops dallying and frees its port."""
    world = _World(root, policy=ServerPolicy(rate=None, maxDallying=2))
    for i in range(4):
        world.put(b"x" * 10, f"up{i}.bin")
    assert len(world.protocol.sessions) == 2
    assert sorted(root.listdir()) == ["up0.bin", "up1.bin", "up2.bin", "up3.bin"]
    world.settle()


# How transfers end (#19): a lost final ACK, routine misses, and the OACK that atftp
# takes only once.


def _downloadAllButTheFinalAck(
    world: _World, name: bytes, blocks: int, port: int = 0
) -> tuple[_Raw, tuple[str, int]]:
    """A client that gets every block of C{name} and ACKs all but the last one."""
    peer = world.raw(port=port)
    peer.send(ReadRequest(name, "octet", {"blksize": "512"}))
    world.net.pump()
    oack, tid = peer.received[0]
    assert isinstance(oack, OptionAck)
    peer.send(Ack(0), tid)
    world.net.pump()
    for block in range(1, blocks):
        world.net.advance(0.002)
        assert peer.received[-1][0].block == block
        peer.send(Ack(block), tid)
        world.net.pump()
    assert peer.received[-1][0].block == blocks
    return peer, tid


def _ending(events: list[Any]) -> Any:
    (event,) = [e for e in events if e.get("tftpTransfer")]
    return event


def test_lostFinalAckAndClosedPortIsCompletedUnconfirmedAtOnce(root: FilePath) -> None:
    """
    #19 §1: the final ACK is lost and the client closed its port (as iPXE, pxelinux, curl
    do): the first resend of the last block meets ICMP port unreachable, and the download
    ends there, done but unconfirmed, counting the last block.
    """
    _file(root, "nbp.0", 512 * 4 + 100)
    world = _World(root)
    with capturedLogs() as events:
        peer, tid = _downloadAllButTheFinalAck(world, b"nbp.0", 5)
        clientPort = peer.transport.getHost().port
        peer.transport.stopListening()
        started = world.net.clock.seconds()
        world.net.advance(1)
        assert world.protocol.sessions == {}
    event = _ending(events)
    assert event["outcome"] == "completed-unconfirmed"
    assert event["reason"] == "the client's port closed (ICMP port unreachable)"
    assert (event["bytes"], event["blocks"]) == (512 * 4 + 100, 5)
    assert event["log_level"].name == "info"
    assert event["duration"] - started < 0.2
    unreachable = [r for r in world.net.datagrams if r.fate == "unreachable"]
    assert [r.destination for r in unreachable] == [("192.0.2.2", clientPort)]
    world.settle()


def test_lostFinalAckWithoutAnySignalEndsAfterAFewResends(root: FilePath) -> None:
    """
    #19 §1: the client is silent (its host answers no ICMP): a few resends of the last
    block (ServerPolicy.finalResends), then completed-unconfirmed, never "failed".
    """
    _file(root, "f", 512 * 3 + 1)
    world = _World(root, policy=ServerPolicy(rate=None, finalResends=3))
    with capturedLogs() as events:
        peer, tid = _downloadAllButTheFinalAck(world, b"f", 4)
        world.net.advance(30)
        assert world.protocol.sessions == {}
    event = _ending(events)
    assert event["outcome"] == "completed-unconfirmed"
    assert event["reason"] == "no final ACK after 3 resends"
    assert event["bytes"] == 512 * 3 + 1
    finals = [p for p, _ in peer.received if isinstance(p, Data) and p.block == 4]
    assert len(finals) == 4  # sent, then resent three times
    assert event["duration"] < 2  # round trips of 2 ms: resends after 0.05, 0.1, 0.2 s
    world.settle()


def test_clientStillWaitingForTheLastBlockGetsTheWholeBudget(root: FilePath) -> None:
    """
    A client that repeats its ACK of the block before the last one has not got the last
    block: it is alive, so the last block is resent up to the retry budget, and a transfer
    that still fails is logged as failed.
    """
    _file(root, "f", 512 * 3 + 1)
    world = _World(root, policy=ServerPolicy(rate=None, retries=6, finalResends=2))
    world.net.dropIf(lambda r: r.data[:4] == b"\x00\x03\x00\x04")  # DATA 4 never arrives
    with capturedLogs() as events:
        peer = world.raw()
        peer.send(ReadRequest(b"f", "octet", {"blksize": "512"}))
        world.net.pump()
        tid = peer.received[0][1]
        for block in range(4):
            peer.send(Ack(block), tid)
            world.net.advance(0.002)
        peer.send(Ack(3), tid)  # "I still need block 4"
        world.net.advance(200)
    event = _ending(events)
    assert event["outcome"] == "failed" and "no answer after 7 tries" in event["reason"]
    world.settle()


def test_requestForAnotherFileEndsTheDownloadWaitingForItsFinalAck(root: FilePath) -> None:
    """
    #19 §1: pxelinux's final ACK for its first file is lost and it asks for the next file
    from a new port: the first download gets one last resend of its last block and, with
    no answer within two round trips, ends as completed-unconfirmed.
    """
    _file(root, "pxelinux.0", 512 * 2 + 10)
    _file(root, "ldlinux.c32", 100)
    world = _World(root, policy=ServerPolicy(rate=None, finalResends=10))
    with capturedLogs() as events:
        peer, tid = _downloadAllButTheFinalAck(world, b"pxelinux.0", 3)
        before = len(peer.received)
        following = world.raw()
        following.send(ReadRequest(b"ldlinux.c32", "octet"))
        world.net.pump()
        assert len(peer.received) == before + 1  # the one last resend
        world.net.advance(0.2)
        assert list(world.protocol.sessions) == [("192.0.2.2", following.transport.getHost().port)]
        first = [e for e in events if e.get("tftpTransfer")]
        assert [(e["file"], e["outcome"]) for e in first] == [
            ("pxelinux.0", "completed-unconfirmed")
        ]
        assert first[0]["reason"] == "the client moved on to another file"
        assert first[0]["bytes"] == 512 * 2 + 10
        following.send(Ack(1), following.received[0][1])
        world.settle()


def test_sameHostClientThatLostTheLastBlockStillGetsIt(root: FilePath) -> None:
    """
    Two clients behind one address: the first lost our last block, and the second asks for
    another file. The last block is sent once more at once, the first client ACKs it, and
    its download is completed, not cut short.
    """
    _file(root, "a", 512 * 2 + 10)
    _file(root, "b", 100)
    world = _World(root, policy=ServerPolicy(rate=None, finalResends=10))
    with capturedLogs() as events:
        peer, tid = _downloadAllButTheFinalAck(world, b"a", 3)
        other = world.raw()
        other.send(ReadRequest(b"b", "octet"))
        world.net.pump()
        assert peer.received[-1][0] == Data(3, (root.child("a").getContent())[1024:])
        peer.send(Ack(3), tid)
        other.send(Ack(1), other.received[0][1])
        world.net.pump()
        world.settle()
    outcomes = {e["file"]: e["outcome"] for e in events if e.get("tftpTransfer")}
    assert outcomes == {"a": "completed", "b": "completed"}


def test_missingFileOnAReadIsInfoOtherRefusalsWarn(root: FilePath) -> None:
    """
    #19 §2: a boot loader's probes for missing files are routine (info); an access
    violation, and a refused upload, are still warnings.
    """
    world = _World(root, backend=FilesystemBackend(root, writable=False))
    with capturedLogs() as events:
        for name in ("pxelinux.cfg/01-52-54-00-12-34-56", "pxelinux.cfg/C000025B", "../etc"):
            with pytest.raises(errors.TFTPError):
                world.get(name)
        with pytest.raises(errors.AccessViolation):
            world.put(b"x", "up")
        world.settle()
    levels = [
        (e["direction"], e["outcome"], e["reason"], e["log_level"].name)
        for e in events
        if e.get("tftpTransfer")
    ]
    assert levels == [
        ("RRQ", "failed", "File not found", "info"),
        ("RRQ", "failed", "File not found", "info"),
        ("RRQ", "failed", "Access violation", "warn"),
        ("WRQ", "failed", "Uploads are disabled", "warn"),
    ]


def test_downloadOackWaitsForTheClientsOwnResend(root: FilePath) -> None:
    """
    #19 §4: atftp aborts on a second OACK ("unexpected OACK"). When its ACK 0 is lost it
    resends that ACK itself after each 5 s of silence, so our timer stays quiet past two
    of those (OACK_QUIET); a client whose OACK was lost repeats its request and is
    answered at once.
    """
    data = _file(root, "f", 1428 * 8 * 2)
    world = _World(root)
    peer = world.raw()
    request = ReadRequest(b"f", "octet", {"blksize": "1428", "windowsize": "8"})
    peer.send(request)
    world.net.pump()
    oack, tid = peer.received[0]
    assert isinstance(oack, OptionAck)
    world.net.advance(10)  # two ACK 0s lost; atftp resends after 5 s, 10 s: we stay quiet
    assert len(peer.received) == 1
    peer.send(Ack(0), tid)
    world.net.pump()
    assert [p.block for p, _ in peer.received[1:]] == list(range(1, 9))
    peer.send(Ack(8), tid)
    world.net.pump()
    peer.send(Ack(16), tid)
    world.net.pump()
    received = b"".join(p.data for p, _ in peer.received if isinstance(p, Data))
    assert received[: len(data)] == data
    # Nobody answers: the OACK comes again only after the quiet gap.
    other = world.raw()
    other.send(request)
    world.net.pump()
    world.net.advance(11.9)
    assert len(other.received) == 1
    other.send(request)  # a repeated request is answered at once
    world.net.pump()
    assert len(other.received) == 2
    world.net.advance(11.9)
    assert len(other.received) == 2
    world.net.advance(0.2)
    assert [type(p).__name__ for p, _ in other.received] == ["OptionAck"] * 3
    world.settle()


def test_uploadStopsDallyingWhenTheClientsPortCloses(root: FilePath) -> None:
    """
    A finished upload keeps its port to ACK a repeated last DATA; once the client's port
    answers ICMP port unreachable (to the unasked copy of the final ACK), it stops at once.
    """
    world = _World(root)
    peer, _ = _oneBlockUpload(world)
    world.net.pump()
    assert world.protocol.sessions
    peer.transport.stopListening()
    world.net.advance(1)
    assert world.protocol.sessions == {}
    assert [r.fate for r in world.net.datagrams][-1] == "unreachable"
    assert root.child("w").getContent() == b"end"
    world.settle()


def test_engineSettingsFromPolicy() -> None:
    """Each transfer's engine runs by the policy: a dally is never shorter than the timeout,
    and an upload's OACK is nudged at most as often as an unanswered peer is retried."""
    policy = ServerPolicy(
        retries=7,
        timeout=2.0,
        rollover=1,
        unansweredRetries=2,
        finalResends=4,
        dally=1.0,
        firstDataWait=30.0,
    )
    assert policy.engineSettings() == EngineSettings(
        retries=7,
        timeout=2.0,
        rollover=1,
        unansweredRetries=2,
        finalResends=4,
        dally=2.0,
        firstDataWait=30.0,
        nudges=2,
        repeatFinalAck=True,
    )
