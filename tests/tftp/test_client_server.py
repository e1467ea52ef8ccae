"""Our client against our own server (twisted_udpsuite.tftp.server) on the in-memory network."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from twisted.python.filepath import FilePath

from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.client import get, put
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol

SERVER = ("192.0.2.1", 6969)


def setUp(tmp_path: Any, **faults: Any) -> tuple[MemoryNetwork, Any, FilePath]:
    net = MemoryNetwork(seed=faults.pop("seed", 5), **faults)
    serverHost = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    root = tmp_path / "root"
    root.mkdir()
    backend = FilesystemBackend(FilePath(str(root)), writable=True, allowOverwrite=True)
    protocol = TFTPServerProtocol(backend, ServerPolicy(rate=None), reactor=serverHost)
    serverHost.listenUDP(6969, protocol, maxPacketSize=65536)
    return net, client, FilePath(str(root))


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"blksize": 1428},
        {"blksize": 8192, "windowsize": 16},
        {"blksize": 65464, "windowsize": 4, "timeout": 2},
    ],
)
def test_roundTrip(tmp_path: Any, options: dict[str, int]) -> None:
    """Upload then download, byte-identical, with the options the server granted."""
    net, client, root = setUp(tmp_path)
    data = payload(300_007)
    up = net.runUntil(put(client, SERVER, data, "f.bin", **options))  # type: ignore[arg-type]
    assert root.child("f.bin").getContent() == data
    target = tmp_path / "down.bin"
    down = net.runUntil(get(client, SERVER, "f.bin", str(target), **options))  # type: ignore[arg-type]
    assert target.read_bytes() == data
    for result in (up, down):
        assert result.options.blksize == options.get("blksize", 512)
        assert result.options.windowsize == options.get("windowsize", 1)
        assert result.options.tsize == len(data)
    net.advance(200)
    assert net.clock.getDelayedCalls() == []
    assert client.udpPorts == {}


@pytest.mark.parametrize("seed", [1, 2])
def test_lossy(tmp_path: Any, seed: int) -> None:
    """15% loss, duplicates and reordering each way, windowed: still identical."""
    net, client, root = setUp(tmp_path, loss=0.15, duplicate=0.05, reorder=0.05, seed=seed)
    data = payload(100_000, seed)
    net.runUntil(put(client, SERVER, data, "f.bin", blksize=1024, windowsize=8, retries=12))
    assert root.child("f.bin").getContent() == data
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f.bin", out, blksize=1024, windowsize=8, retries=12))
    assert out.getvalue() == data
    assert result.retransmits > 0
    net.advance(200)
    assert net.clock.getDelayedCalls() == []


def test_netascii(tmp_path: Any) -> None:
    net, client, root = setUp(tmp_path)
    text = b"one\ntwo\r\nthree\rfour\n" * 200
    net.runUntil(put(client, SERVER, text, "t.txt", mode="netascii"))
    assert root.child("t.txt").getContent() == text
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "t.txt", out, mode="netascii", blksize=100))
    assert out.getvalue() == text


def test_missingAndEscaping(tmp_path: Any) -> None:
    net, client, root = setUp(tmp_path)
    with pytest.raises(errors.FileNotFound):
        net.runUntil(get(client, SERVER, "nope", io.BytesIO()))
    with pytest.raises(errors.AccessViolation):
        net.runUntil(get(client, SERVER, "../secret", io.BytesIO()))
    net.advance(200)
    assert net.clock.getDelayedCalls() == []
