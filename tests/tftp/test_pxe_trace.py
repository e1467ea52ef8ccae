"""
The wire trace (#18 §4): L{twisted_udpsuite.tftp.trace}'s summaries and packets, the server
and the client reporting every datagram in memory, and for real: C{twistd udpsuite tftp
--trace --pcap FILE} and C{udpsuite tftp get --trace --pcap FILE} on loopback, their pcap
files read by tcpdump (checksums verified).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.test_server import SERVER, _file, _World
from twisted_udpsuite.tftp import client
from twisted_udpsuite.tftp.tap import Options
from twisted_udpsuite.tftp.trace import (
    IWireTracer,
    PcapWriter,
    TextTracer,
    TracerGroup,
    _checksum,
    describe,
    ipPacket,
    logLine,
    logTracer,
)
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    WriteRequest,
)


@implementer(IWireTracer)
class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[bool, tuple[str, int], tuple[str, int], bytes]] = []

    def datagram(self, outgoing: bool, local: Any, remote: Any, data: bytes) -> None:
        self.seen.append((outgoing, local, remote, data))

    def lines(self) -> list[str]:
        return [("> " if out else "< ") + describe(data) for out, _, _, data in self.seen]


def test_describe() -> None:
    """Each kind of packet in a few words; garbage says what it is."""
    cases = [
        (ReadRequest(b"pxelinux.0", "octet", {"blksize": "1468", "tsize": "0"}),
         "RRQ 'pxelinux.0' octet blksize=1468 tsize=0"),
        (WriteRequest(b"up\xff", "netascii"), "WRQ 'up\\\\xff' netascii"),
        (Data(7, b"x" * 1468), "DATA 7 1468 bytes"),
        (Ack(65535), "ACK 65535"),
        (Error(1, "File not found"), "ERROR 1 'File not found'"),
        (OptionAck({"blksize": "1432"}), "OACK blksize=1432"),
    ]  # fmt: skip
    for packet, text in cases:
        assert describe(packet.toBytes()) == text
    assert describe(b"\x00").startswith("malformed runt (1 bytes")
    assert describe(b"\x00\x09abc").startswith("malformed opcode 9 (5 bytes")
    assert len(describe(ReadRequest(b"a" * 1000, "octet").toBytes())) == 300
    assert logLine(True, ("::1", 69), ("::1", 5000), Ack(1).toBytes()) == (
        "[::1]:69 > [::1]:5000 ACK 1"
    )
    assert logLine(False, ("", 69), ("192.0.2.2", 7), Ack(1).toBytes()) == (
        "*:69 < 192.0.2.2:7 ACK 1"
    )


@pytest.mark.parametrize(
    ("source", "destination"),
    [(("192.0.2.1", 69), ("192.0.2.2", 3000)), (("2001:db8::1", 69), ("2001:db8::2", 3000))],
)
def test_ipPacketChecksums(source: Any, destination: Any) -> None:
    """The IP and UDP checksums verify (a sum over the covered bytes comes to zero)."""
    payload = Data(1, os.urandom(513)).toBytes()
    packet = ipPacket(source, destination, payload, ident=7)
    if ":" in source[0]:
        header, udp = packet[:40], packet[40:]
        pseudo = header[8:40] + struct.pack("!IxxxB", len(udp), 17)
        assert header[0] >> 4 == 6
    else:
        header, udp = packet[:20], packet[20:]
        assert _checksum(header) == 0
        pseudo = header[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert _checksum(pseudo + udp) == 0
    assert udp[8:] == payload
    assert struct.unpack("!HH", udp[:4]) == (source[1], destination[1])
    wildcard = ipPacket(("", 69), ("::ffff:192.0.2.2", 3000), b"x")
    assert wildcard[12:20] == bytes(4) + bytes([192, 0, 2, 2])  # IPv4, from 0.0.0.0


def test_pcapWriter() -> None:
    """The classic pcap header (LINKTYPE_RAW), then one record per datagram."""
    clock = Clock()
    clock.advance(1_700_000_000.25)
    out = io.BytesIO()
    writer = PcapWriter(out, clock)
    assert verifyObject(IWireTracer, writer)
    writer.datagram(False, ("192.0.2.1", 69), ("192.0.2.2", 3000), Ack(0).toBytes())
    data = out.getvalue()
    assert struct.unpack("<IHHiIII", data[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    seconds, micros, caplen, length = struct.unpack("<IIII", data[24:40])
    assert (seconds, micros, caplen, length) == (1_700_000_000, 250_000, 32, 32)
    assert data[40 + 12 : 40 + 20] == bytes([192, 0, 2, 2, 192, 0, 2, 1])  # from the client
    writer.close()
    writer.datagram(True, ("192.0.2.1", 69), ("192.0.2.2", 3000), b"late")  # ignored


def test_serverTracesEveryDatagram(root: FilePath) -> None:
    """
    The request port and the transfer port report what they get and send, each from its
    own address, in order; the trace changes nothing in the transfer.
    """
    data = _file(root, "f", 1100)
    tracer = Recorder()
    world = _World(root)
    world.protocol.tracer = tracer
    got, result = world.get("f", blksize=1024)
    assert got == data
    assert tracer.lines() == [
        "< RRQ 'f' octet blksize=1024 tsize=0",
        "> OACK blksize=1024 tsize=1100",
        "< ACK 0",
        "> DATA 1 1024 bytes",
        "< ACK 1",
        "> DATA 2 76 bytes",
        "< ACK 2",
    ]
    assert tracer.seen[0][1] == (SERVER[0], 69)
    tid = result.server
    assert {local for _, local, _, _ in tracer.seen[1:]} == {tid}
    world.settle()


def test_windowsAreTracedDatagramByDatagram(root: FilePath) -> None:
    """
    With a tracer, windows are not sent as one GSO batch nor read coalesced (both would
    pass the trace by): every DATA of a windowed download, and of a windowed upload, is
    in the server's trace and in the client's.
    """
    data = _file(root, "f", 512 * 9 + 100)
    serverTrace, clientTrace = Recorder(), Recorder()
    world = _World(root)
    world.protocol.tracer = serverTrace
    got, _ = world.get("f", windowsize=4, tracer=clientTrace)
    assert got == data
    for trace, direction in ((serverTrace, ">"), (clientTrace, "<")):
        assert _dataBlocks(trace, direction) == list(range(1, 11))
    uploads = Recorder()
    world.put(data, "up", windowsize=4, tracer=uploads)
    assert _dataBlocks(uploads, ">") == list(range(1, 11))
    world.settle()


def _dataBlocks(trace: Recorder, direction: str) -> list[int]:
    """The block numbers of the DATA lines (C{"> DATA 3 512 bytes"}) going one way."""
    lines = trace.lines()
    return [int(line.split()[2]) for line in lines if line.startswith(f"{direction} DATA")]


def test_serverTracesRefusals(root: FilePath) -> None:
    """Answers from the request port itself (a refused mode) are traced too."""
    tracer = Recorder()
    world = _World(root)
    world.protocol.tracer = tracer
    peer = world.raw()
    peer.send(ReadRequest(b"f", "mail"))
    world.net.pump()
    assert tracer.lines() == ["< RRQ 'f' mail", "> ERROR 4 'Mail mode is not supported'"]
    world.settle()


def test_clientTraces(root: FilePath) -> None:
    """The client reports its own datagrams, the first request included."""
    _file(root, "f", 600)
    world = _World(root)
    tracer = Recorder()
    sink = io.BytesIO()
    world.net.runUntil(client.get(world.clientHost, SERVER, "f", sink, tracer=tracer))
    assert tracer.lines()[:3] == ["> RRQ 'f' octet tsize=0", "< OACK tsize=600", "> ACK 0"]
    assert tracer.seen[0][2] == SERVER
    uploads = Recorder()
    world.net.runUntil(client.put(world.clientHost, SERVER, b"abc", "up", tracer=uploads))
    assert uploads.lines()[-2:] == ["> DATA 1 3 bytes", "< ACK 1"]
    world.settle()


def test_textAndGroupTracers() -> None:
    """--trace's lines go to the log, at info; a group hands each datagram to all."""
    lines: list[str] = []
    recorder = Recorder()
    group = TracerGroup([TextTracer(lines.append), recorder])
    group.datagram(True, ("192.0.2.1", 69), ("192.0.2.2", 9), Ack(3).toBytes())
    assert lines == ["192.0.2.1:69 > 192.0.2.2:9 ACK 3"] and len(recorder.seen) == 1
    group.close()
    with capturedLogs() as events:
        logTracer().datagram(False, ("192.0.2.1", 69), ("192.0.2.2", 9), Ack(3).toBytes())
    assert [(e["line"], e["log_level"].name) for e in events] == [
        ("192.0.2.1:69 < 192.0.2.2:9 ACK 3", "info")
    ]


def test_traceOptions(tmp_path: Path) -> None:
    """--trace and --pcap make one tracer; --pcap is refused with --workers."""
    options = Options()
    options.parseOptions(["--trace", "--pcap", str(tmp_path / "t.pcap")])
    tracer = options.tracer(Clock())
    assert isinstance(tracer, TracerGroup) and len(tracer.tracers) == 2
    tracer.close()
    assert (tmp_path / "t.pcap").stat().st_size == 24
    plain = Options()
    plain.parseOptions([])
    assert plain.tracer() is None
    with pytest.raises(Exception, match="--pcap is one file"):
        Options().parseOptions(["--pcap", str(tmp_path / "x"), "--workers", "2"])


@pytest.fixture
def root(tmp_path: Any) -> FilePath:
    return FilePath(str(tmp_path))


async def _tcpdump(reactor: Any, path: Path) -> list[str]:
    tcpdump = requirePeer("tcpdump")
    out, err, code = await runProcess(reactor, [tcpdump, "-r", str(path), "-nn", "-vv"])
    assert code == 0, err
    assert b"LINKTYPE_RAW" in err or b"RAW" in err, err  # "reading from file ..., link-type RAW"
    return out.decode().splitlines()


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_tcpdumpReadsBothTraces(reactor: Any, tmp_path: Path, loopbackNamespace: Any) -> None:
    """
    A download with --trace and --pcap on both sides: each pcap holds every datagram
    (tcpdump reads it, with correct checksums), the server logs a line per datagram and
    the client prints one per datagram on standard error.
    """
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(3000))
    serverPcap, clientPcap = tmp_path / "server.pcap", tmp_path / "client.pcap"
    server = BackgroundProcess(
        reactor,
        [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
        + ["--port", "69", "--root", str(root), "--trace", "--pcap", str(serverPcap)],
    )
    try:
        await server.waitFor(b"tftp listening")
        out, err, code = await runProcess(
            reactor,
            [*loopbackNamespace, venvScript("udpsuite"), "tftp", "get", "127.0.0.1:69", "f"]
            + [str(tmp_path / "got"), "--blksize", "1024", "--trace", "--pcap", str(clientPcap)],
        )
        assert code == 0, err
        await server.waitFor(b"RRQ 'f'.*completed")
    finally:
        await server.stop()
    assert (tmp_path / "got").read_bytes() == (root / "f").read_bytes()
    expected = ["RRQ 'f'", "OACK", "ACK 0", "DATA 1 1024", "ACK 1", "DATA 2 1024", "ACK 2"]
    expected += ["DATA 3 952", "ACK 3"]
    shown = err.decode().splitlines()
    assert len(shown) == 9 and all(e in line for e, line in zip(expected, shown, strict=True))
    assert shown[0].endswith("> 127.0.0.1:69 RRQ 'f' octet blksize=1024 tsize=0")
    logged = [line for line in server.output.decode().splitlines() if "127.0.0.1:" in line]
    assert len([line for line in logged if " < " in line or " > " in line]) == 9
    for pcap in (serverPcap, clientPcap):
        packets = [line for line in await _tcpdump(reactor, pcap) if " > " in line]
        assert len(packets) == 9, packets
        assert all("[udp sum ok]" in line for line in packets), packets
    request = [line for line in await _tcpdump(reactor, serverPcap) if "127.0.0.1.69:" in line]
    assert request and "RRQ" in " ".join(request)  # tcpdump decodes TFTP on port 69
