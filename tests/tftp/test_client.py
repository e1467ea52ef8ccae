"""
Unit tests for the TFTP client on the in-memory network, against a scripted fake server
(tests/tftp/fakeserver.py) that misbehaves on demand.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.python.filepath import FilePath

from tests.helpers import failureResultOf
from tests.tftp.fakeserver import FakeServer, Script
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.client import get, put
from twisted_udpsuite.tftp.wire import Error, parsePacket

SERVER = ("192.0.2.1", 69)


def setUp(
    files: dict[bytes, bytes] | None = None, script: Script | None = None, **faults: Any
) -> tuple[MemoryNetwork, Any, FakeServer]:
    net = MemoryNetwork(seed=faults.pop("seed", 7), **faults)
    serverHost = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server = FakeServer(serverHost, files or {}, script)
    serverHost.listenUDP(69, server, maxPacketSize=65536)
    return net, client, server


def settle(net: MemoryNetwork) -> None:
    """Let every timer (dallies, server give-ups) run out, so leaks show."""
    net.advance(60)


def sentBy(net: MemoryNetwork, port: int | None = None) -> list[Any]:
    return [
        parsePacket(r.data)
        for r in net.datagrams
        if r.source[0] == "192.0.2.2" and (port is None or r.destination[1] == port)
    ]


def test_fileNotFound(tmp_path: Any) -> None:
    """ERROR 1 fails with FileNotFound carrying the server's text; no file is left."""
    net, client, server = setUp()
    target = tmp_path / "out"
    d = get(client, SERVER, "missing", str(target))
    with pytest.raises(errors.FileNotFound, match="File not found"):
        net.runUntil(d)
    assert os.listdir(tmp_path) == []
    settle(net)
    assert net.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "code, cls",
    [
        (2, errors.AccessViolation),
        (3, errors.DiskFull),
        (6, errors.FileExists),
        (0, errors.RemoteError),
        (42, errors.RemoteError),
    ],
)
def test_requestErrors(code: int, cls: type[errors.TFTPError]) -> None:
    net, client, server = setUp(script=Script(requestError=(code, "nope")))
    d = put(client, SERVER, b"data", "x")
    with pytest.raises(cls) as info:
        net.runUntil(d)
    assert info.value.message == "nope" and info.value.code == code


def test_silentServerTimesOut() -> None:
    """No answer: the request is sent 1 + retries times, then TransferTimeout."""
    net, client, server = setUp(script=Script(silent=True))
    d = get(client, SERVER, "f", io.BytesIO(), retries=3, timeout=2)
    with pytest.raises(errors.TransferTimeout):
        net.runUntil(d)
    assert len(server.requests) == 4
    assert net.clock.seconds() == pytest.approx(8)
    assert net.clock.getDelayedCalls() == []
    assert client.udpPorts == {}


def test_cancelDuringRequest(tmp_path: Any) -> None:
    """Cancel before any answer: port closed, timers gone, temp file removed."""
    net, client, server = setUp(script=Script(silent=True))
    d = get(client, SERVER, "f", FilePath(str(tmp_path / "out")))
    net.pump()
    assert len(os.listdir(tmp_path)) == 1  # the temporary sibling
    d.cancel()
    failureResultOf(d, CancelledError)
    assert os.listdir(tmp_path) == []
    assert client.udpPorts == {}
    assert net.clock.getDelayedCalls() == []


def test_unrequestedOptionInOACKIsRefused() -> None:
    """An OACK with an option we never asked for gets ERROR 8 and fails the transfer."""
    net, client, server = setUp({b"f": b"x"}, Script(extraOption={"bogus": "1"}))
    d = get(client, SERVER, "f", io.BytesIO(), blksize=1024)
    with pytest.raises(errors.OptionNegotiationRefused):
        net.runUntil(d)
    settle(net)
    assert [e.code for e in server.sessions[0].errors] == [8]
    assert net.clock.getDelayedCalls() == []


def test_strayFromAnotherHostGetsError5() -> None:
    """Before the TID is known, a packet from another host is answered with ERROR 5."""
    net, client, server = setUp(script=Script(silent=True))
    other = net.addHost("192.0.2.9/24")
    d = get(client, SERVER, "f", io.BytesIO(), retries=0)
    net.pump()
    clientPort = next(iter(client.udpPorts.values())).port
    strays: list[Any] = []

    class Catch:
        def makeConnection(self, transport: Any) -> None:
            self.transport = transport

        def datagramReceived(self, data: bytes, addr: Any) -> None:
            strays.append(parsePacket(data))

        def doStop(self) -> None:
            pass

    port = other.listenUDP(5000, Catch())  # type: ignore[arg-type]
    port.write(b"\x00\x03\x00\x01hi", ("192.0.2.2", clientPort))
    net.pump()
    assert strays == [Error(5, "Unknown transfer ID")]
    with pytest.raises(errors.TransferTimeout):
        net.runUntil(d)


def test_badArguments() -> None:
    net, client, server = setUp()
    with pytest.raises(ValueError):
        get(client, SERVER, "f", io.BytesIO(), mode="mail")
    with pytest.raises(ValueError):
        get(client, SERVER, "f", io.BytesIO(), blksize=4)
    with pytest.raises(TypeError):
        put(client, SERVER, 42, "f")
    assert client.udpPorts == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_garbageNeverRaises(datagrams: list[bytes]) -> None:
    """Whatever the server's host sends first, the client never raises and ends cleanly."""
    net, client, server = setUp(script=Script(silent=True))
    d = get(client, SERVER, "f", io.BytesIO(), retries=1)
    net.pump()
    clientPort = next(iter(client.udpPorts.values()))
    for data in datagrams:
        clientPort.protocol.datagramReceived(data, ("192.0.2.1", 4000))
    try:
        net.runUntil(d)
    except errors.TFTPError:
        pass
    except AssertionError:
        d.cancel()  # a plausible DATA 1 started a transfer that now waits: fine
    net.advance(120)
    assert client.udpPorts == {}
    assert net.clock.getDelayedCalls() == []


# Transfers (blocks move through the shared engine)


def payload(size: int, seed: int = 1) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5000])
def test_getPlainToPath(tmp_path: Any, size: int) -> None:
    """Sizes around the block size, including the empty file and k*512 (final 0-byte DATA)."""
    data = payload(size)
    net, client, server = setUp({b"f": data})
    target = tmp_path / "out"
    result = net.runUntil(get(client, SERVER, "f", FilePath(str(target))))
    assert target.read_bytes() == data
    assert os.listdir(tmp_path) == ["out"]
    assert result.bytes == size and result.options.tsize == size
    assert result.server is not None and result.server[1] != 69
    settle(net)
    assert net.clock.getDelayedCalls() == []
    assert client.udpPorts == {}


def test_getWithOptions() -> None:
    data = payload(100_000)
    net, client, server = setUp({b"f": data})
    out = io.BytesIO()
    seen: list[tuple[int, int | None]] = []
    result = net.runUntil(
        get(
            client,
            SERVER,
            "f",
            out,
            blksize=1428,
            windowsize=4,
            timeout=3,
            progress=lambda done, total: seen.append((done, total)),
        )
    )
    assert out.getvalue() == data
    assert result.accepted == {
        "blksize": "1428",
        "windowsize": "4",
        "timeout": "3",
        "tsize": "100000",
    }
    assert (result.options.blksize, result.options.windowsize) == (1428, 4)
    assert seen[-1] == (100_000, 100_000)
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_getServerIgnoresOptions() -> None:
    """A server without RFC 2347 answers DATA 1: fall back to 512-byte lock-step."""
    data = payload(3000)
    net, client, server = setUp({b"f": data}, Script(options="ignore"))
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f", out, blksize=1428, windowsize=8))
    assert out.getvalue() == data
    assert result.fellBack and result.accepted == {}
    assert result.options.blksize == 512


def test_getServerRefusesOptions() -> None:
    """ERROR 8 to the request: ask once more without options (RFC 2347)."""
    data = payload(3000)
    net, client, server = setUp({b"f": data}, Script(options="refuse"))
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f", out, blksize=1428))
    assert out.getvalue() == data
    assert result.fellBack
    assert [r.options for r in server.requests] == [{"blksize": "1428", "tsize": "0"}, {}]


def test_putServerRefusesOptions() -> None:
    data = payload(2000)
    net, client, server = setUp(script=Script(options="refuse"))
    result = net.runUntil(put(client, SERVER, data, "up", blksize=1024))
    assert server.uploads[b"up"] == data
    assert result.fellBack and len(server.requests) == 2


def test_putServerIgnoresOptions() -> None:
    """A server without RFC 2347 answers ACK 0 to a WRQ with options."""
    data = payload(2000)
    net, client, server = setUp(script=Script(options="ignore"))
    result = net.runUntil(put(client, SERVER, data, "up", blksize=1024))
    assert server.uploads[b"up"] == data
    assert result.fellBack and result.options.blksize == 512


@pytest.mark.parametrize("size", [0, 512, 1025])
def test_putFromPath(tmp_path: Any, size: int) -> None:
    data = payload(size)
    source = tmp_path / "src"
    source.write_bytes(data)
    net, client, server = setUp()
    result = net.runUntil(put(client, SERVER, str(source), "up", blksize=512))
    assert server.uploads[b"up"] == data
    assert result.bytes == size
    assert server.requests[0].options == {"blksize": "512", "tsize": str(size)}
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_putWindowed() -> None:
    data = payload(50_000)
    net, client, server = setUp()
    result = net.runUntil(put(client, SERVER, io.BytesIO(data), "up", blksize=1000, windowsize=8))
    assert server.uploads[b"up"] == data
    assert result.options.windowsize == 8


def test_errorMidDownload(tmp_path: Any) -> None:
    """An ERROR after some blocks fails with the server's text, no reply, no file left."""
    net, client, server = setUp(
        {b"f": payload(10_000)}, Script(errorAfterBlock=5, errorPacket=(3, "disk on fire"))
    )
    d = get(client, SERVER, "f", str(tmp_path / "out"))
    with pytest.raises(errors.DiskFull, match="disk on fire"):
        net.runUntil(d)
    assert os.listdir(tmp_path) == []
    sent = sentBy(net)
    assert not any(isinstance(p, Error) for p in sent)
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_errorMidUpload() -> None:
    net, client, server = setUp(script=Script(errorAfterBlock=2, errorPacket=(0, "quota")))
    d = put(client, SERVER, payload(10_000), "up")
    with pytest.raises(errors.RemoteError, match="quota"):
        net.runUntil(d)
    assert b"up" not in server.uploads


def test_wrongTIDMidDownload() -> None:
    """A DATA from another port of the server's host gets ERROR 5; the transfer goes on."""
    data = payload(5000)
    net, client, server = setUp({b"f": data}, Script(strayAtBlock=3))
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "f", out))
    assert out.getvalue() == data
    stray = server.sessions[0].strayPort.protocol
    assert [parsePacket(p) for p in stray.received] == [Error(5, "Unknown transfer ID")]


def test_wrongTIDMidUpload() -> None:
    data = payload(5000)
    net, client, server = setUp(script=Script(strayAtBlock=3))
    net.runUntil(put(client, SERVER, data, "up"))
    assert server.uploads[b"up"] == data
    stray = server.sessions[0].strayPort.protocol
    assert [parsePacket(p) for p in stray.received] == [Error(5, "Unknown transfer ID")]


def test_duplicateAndReorderedData() -> None:
    data = payload(40_000)
    net, client, server = setUp(
        {b"f": data}, Script(duplicateData=True, swapBlocks=(2, 3)), reorder=0.2
    )
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "f", out, blksize=512, windowsize=4))
    assert out.getvalue() == data
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_finalDataRepeatedIsReAcked() -> None:
    """The last ACK was lost: the server repeats the last DATA and we ACK it again."""
    data = payload(1000)
    net, client, server = setUp({b"f": data}, Script(repeatFinal=2))
    out = io.BytesIO()
    d = get(client, SERVER, "f", out)
    net.runUntil(d)
    assert out.getvalue() == data
    settle(net)
    acks = [p for p in sentBy(net) if type(p).__name__ == "Ack" and p.block == 2]
    assert len(acks) == 3
    assert net.clock.getDelayedCalls() == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossyDownloadAndUpload(seed: int) -> None:
    """20% loss each way: retransmissions get everything through."""
    data = payload(30_000, seed)
    net, client, server = setUp({b"f": data}, loss=0.2, seed=seed)
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f", out, blksize=1024, windowsize=4, retries=10))
    assert out.getvalue() == data
    assert result.retransmits > 0
    result = net.runUntil(put(client, SERVER, data, "up", blksize=1024, retries=10))
    assert server.uploads[b"up"] == data
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_silentMidTransfer(tmp_path: Any) -> None:
    """The server vanishes mid-transfer: bounded retries, then TransferTimeout, no file."""
    net, client, server = setUp({b"f": payload(5000)})
    net.dropIf(lambda r: r.source[0] == "192.0.2.1" and r.data[:4] == b"\x00\x03\x00\x04")
    d = get(client, SERVER, "f", str(tmp_path / "out"), retries=3)
    with pytest.raises(errors.TransferTimeout):
        net.runUntil(d)
    assert os.listdir(tmp_path) == []
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_cancelMidTransfer(tmp_path: Any) -> None:
    """Cancelling sends ERROR to the server, closes the port and removes the temp file."""
    net, client, server = setUp({b"f": payload(50_000)}, latency=0.01)
    d = get(client, SERVER, "f", str(tmp_path / "out"))
    net.advance(0.2)
    d.cancel()
    failureResultOf(d, CancelledError)
    assert os.listdir(tmp_path) == []
    assert client.udpPorts == {}
    net.advance(0.1)
    assert [e.code for e in server.sessions[0].errors] == [0]
    settle(net)
    assert net.clock.getDelayedCalls() == []


@pytest.mark.parametrize("wrapTo", [0, 1])
def test_rolloverDownload(wrapTo: int) -> None:
    """More than 65535 blocks: the server wraps to 0 (tftp-hpa) or to 1; both work."""
    data = payload(8 * 65_540 + 3)
    net, client, server = setUp({b"f": data}, Script(wrapTo=wrapTo))
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "f", out, blksize=8, windowsize=16))
    assert out.getvalue() == data


@pytest.mark.parametrize("wrapTo", [0, 1])
def test_rolloverUpload(wrapTo: int) -> None:
    data = payload(8 * 65_540 + 3)
    net, client, server = setUp(script=Script(wrapTo=wrapTo))
    net.runUntil(put(client, SERVER, data, "up", blksize=8, windowsize=16, rollover=wrapTo))
    assert server.uploads[b"up"] == data


@pytest.mark.parametrize("tail", [b"", b"\r", b"\n", b"\r\n"])
def test_netascii(tail: bytes, tmp_path: Any) -> None:
    """Both directions, including a bare CR at the very end of the file."""
    text = b"a\nb\r\nc\rd" * 300 + tail
    net, client, server = setUp({b"t": text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")})
    out = io.BytesIO()
    net.runUntil(get(client, SERVER, "t", out, mode="netascii"))
    assert out.getvalue() == text
    target = tmp_path / "t"
    net.runUntil(get(client, SERVER, "t", str(target), mode="netascii", blksize=8))
    assert target.read_bytes() == text
    net.runUntil(put(client, SERVER, text, "u", mode="netascii"))
    assert server.uploads[b"u"] == server.files[b"t"]
    assert server.requests[-1].options["tsize"] == str(len(server.files[b"t"]))


def test_serverLowersBlksize() -> None:
    """RFC 2348: the server may answer a smaller blksize; the client uses it."""
    data = payload(10_000)
    net, client, server = setUp({b"f": data}, Script(maxBlksize=1024))
    out = io.BytesIO()
    result = net.runUntil(get(client, SERVER, "f", out, blksize=4096))
    assert out.getvalue() == data
    assert result.options.blksize == 1024 and not result.fellBack
    assert all(len(r.data) <= 1028 for r in net.datagrams if r.source[0] == "192.0.2.1")


def test_uploadFinalAckLost() -> None:
    """The server's last ACK is lost once: we resend the last DATA, it re-ACKs, success."""
    data = payload(1500)
    net, client, server = setUp()
    dropped: list[int] = []

    def dropFirstFinalAck(record: Any) -> bool:
        if record.source[0] == "192.0.2.1" and record.data == b"\x00\x04\x00\x03" and not dropped:
            dropped.append(1)
            return True
        return False

    net.dropIf(dropFirstFinalAck)
    result = net.runUntil(put(client, SERVER, data, "up"))
    assert dropped and server.uploads[b"up"] == data
    assert result.retransmits >= 1
    settle(net)
    assert net.clock.getDelayedCalls() == []


def test_noReactorMeansTheGlobalOne(monkeypatch: Any) -> None:
    """
    C{get(None, ...)} and C{put(None, ...)} run on the global reactor (here a host of the
    in-memory network standing in for it): the client once kept the C{None} and failed
    with AttributeError as soon as its port started.
    """
    import twisted.internet

    net, client, server = setUp({b"f": b"hello" * 300})
    monkeypatch.setattr(twisted.internet, "reactor", client, raising=False)
    sink = io.BytesIO()
    result = net.runUntil(get(None, SERVER, "f", sink))
    assert sink.getvalue() == b"hello" * 300 and result.bytes == 1500
    result = net.runUntil(put(None, SERVER, b"up" * 400, "u"))
    assert server.uploads[b"u"] == b"up" * 400 and result.bytes == 800
    settle(net)
    assert net.clock.getDelayedCalls() == []
