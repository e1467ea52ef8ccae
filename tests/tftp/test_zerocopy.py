"""
Sending large blocks from a file's mapping: the engine's (header, payload) pairs on the
in-memory network with loss, and a file that shrinks under a real socket.
"""

from __future__ import annotations

import io
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath

from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.options import TransferOptions
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService
from twisted_udpsuite.tftp.transfer import EngineSettings, Receiver, Sender


class _MappedReader:
    """A reader that offers a mapping (and fails the test if it is read instead)."""

    def __init__(self, data: bytes) -> None:
        self.mapping = memoryview(data)
        self.size = len(data)

    def read(self, n: int) -> bytes:
        raise AssertionError("a mapped reader should not be read")


class _Endpoint(DatagramProtocol):
    def __init__(self, peer: tuple[str, int]) -> None:
        self.engine: Any = None
        self.peer = peer
        self.pairs = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.engine.datagramReceived(datagram)

    def send(self, packet: Any) -> None:
        if type(packet) is tuple:  # what sendmsg does with the pair
            self.pairs += 1
            packet = b"".join(packet)
        self.transport.write(packet, self.peer)


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 8192 * 5, 100_000])
@pytest.mark.parametrize("windowsize", [1, 4])
def test_mappedTransfer(size: int, windowsize: int) -> None:
    """Every block from the mapping, whole across loss and duplication; bytes counted."""
    data = os.urandom(size)
    net = MemoryNetwork(seed=3, loss=0.2, duplicate=0.1)
    a, b = net.addHost("192.0.2.1/24"), net.addHost("192.0.2.2/24")
    pa, pb = _Endpoint(("192.0.2.2", 2000)), _Endpoint(("192.0.2.1", 1000))
    a.listenUDP(1000, pa, maxPacketSize=65536)
    b.listenUDP(2000, pb, maxPacketSize=65536)
    options = TransferOptions(blksize=8192, windowsize=windowsize)
    sink = io.BytesIO()
    settings = EngineSettings(retries=30)
    pa.engine = Sender(pa.send, a, options, _MappedReader(data), settings, sendsPairs=True)
    pb.engine = Receiver(pb.send, b, options, sink, settings)
    pb.engine.start()
    pa.engine.start()
    sent = net.runUntil(pa.engine.done)
    received = net.runUntil(pb.engine.done)
    assert sink.getvalue() == data
    assert sent.bytes == received.bytes == size
    assert pa.pairs >= size // 8192 + 1
    net.runUntil(pb.engine.finished)
    assert net.clock.getDelayedCalls() == []


def test_noPairsUnlessSendTakesThem() -> None:
    """Without sendsPairs a reader's mapping is never used: its blocks are read."""
    net = MemoryNetwork()
    a = net.addHost("192.0.2.1/24")
    reader = io.BytesIO(b"x" * 9000)
    reader.mapping = memoryview(b"y" * 9000)  # type: ignore[attr-defined]
    sent: list[Any] = []
    sender = Sender(sent.append, a, TransferOptions(blksize=8192, windowsize=2), reader)
    sender.start()
    assert [type(packet) for packet in sent] == [bytearray, bytearray]
    assert sent[0][4:] == b"x" * 8192
    sender.abort(errors.TFTPError("done"), sendError=False)
    net.runUntil(sender.done.addErrback(lambda _: None))


@pytest_twisted.ensureDeferred
async def test_fileShrinksUnderARealSocket(reactor: Any, tmp_path: Path) -> None:
    """
    Truncated mid-download, the mapped file makes sendmsg fail with EFAULT (no SIGBUS): the
    server ends the transfer with an ERROR instead of sending or resending garbage.
    """
    path = tmp_path / "shrinks"
    path.write_bytes(os.urandom(100_000))
    backend = FilesystemBackend(FilePath(str(tmp_path)))
    service = TFTPService(
        backend, ServerPolicy(rate=None), port=0, interface="127.0.0.1", reactor=reactor
    )
    service.startService()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    try:
        server = ("127.0.0.1", service.listeningPort.getHost().port)
        client.sendto(b"\0\1shrinks\0octet\0blksize\08192\0", server)
        oack, session = await _receive(reactor, client)
        assert oack.startswith(b"\0\6")
        client.sendto(struct.pack("!HH", 4, 0), session)
        data, _ = await _receive(reactor, client)
        assert data[:4] == struct.pack("!HH", 3, 1) and len(data) == 4 + 8192
        os.truncate(path, 0)
        client.sendto(struct.pack("!HH", 4, 1), session)
        error, _ = await _receive(reactor, client)
        assert error[:2] == b"\0\5"
        assert b"shrank" in error
    finally:
        client.close()
        await service.stopService()


async def _receive(reactor: Any, sock: socket.socket) -> tuple[bytes, Any]:
    """The next datagram on a non-blocking socket, polled from the reactor (bounded)."""
    from twisted.internet.task import deferLater

    for _ in range(500):
        try:
            return sock.recvfrom(65536)
        except BlockingIOError:
            await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("nothing received in 5 s")
