"""
Ctrl-C and a closed standard output, on real C{udpsuite} processes (issue #12 items 1, 2).

Ctrl-C is typed (C{\\x03}) on the pseudo-terminal each command runs on, so the terminal
driver sends SIGINT as it would for a user: every command then ends after its cleanup with
one line and exit status 130.  A standard output whose reader has gone (C{| head}) ends a
command quietly with exit status 141.  The servers are scripted on 127.0.0.1 so that each
command is stopped at a known point of its work.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.fakeserver import FakeServer
from twisted_udpsuite.echo.service import EchoService
from twisted_udpsuite.files.service import FileService
from twisted_udpsuite.files.wire import encodeResponseHead
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    ReadRequest,
    WriteRequest,
    encodeAck,
    encodeData,
    parsePacket,
)

pytestmark = pytest.mark.integration

CTRL_C = b"\x03"


def udpsuite(*args: str) -> list[str]:
    return [venvScript("udpsuite"), *args]


async def eventually(reactor: Any, check: Any, timeout: float = 5) -> None:
    """Wait (bounded) until C{check()} is true: a datagram sent just before a process ended."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await deferLater(reactor, 0.02, lambda: None)
    assert check()


def _once(d: Deferred[Any], value: Any) -> None:
    if not d.called:
        d.callback(value)


async def interrupted(
    process: BackgroundProcess, command: str, expect: bytes = rb"interrupted"
) -> bytes:
    """Type Ctrl-C; check exit status 130, one line naming the command, no traceback."""
    process.write(CTRL_C)
    out, _, code = await process.ended(timeout=15)
    lines = re.findall(rb"udpsuite [a-z]+: [^\r\n]*", out)
    assert code == 130, out
    assert b"Traceback" not in out and b"Unhandled" not in out, out
    assert len(lines) == 1 and lines[0].startswith(f"udpsuite {command}: ".encode()), out
    assert re.search(expect, lines[0]), out
    return out


class StallingTFTP(DatagramProtocol):
    """
    Starts a transfer with its first packet (DATA 1 to a read, ACK 0 to a write), then
    answers nothing more; records the client's answer and its ERROR.
    """

    def __init__(self) -> None:
        self.started: Deferred[Any] = Deferred()
        self.error: Deferred[Error] = Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        packet = parsePacket(data)
        if isinstance(packet, ReadRequest):
            self.transport.write(encodeData(1, b"x" * 512), addr)
        elif isinstance(packet, WriteRequest):
            self.transport.write(encodeAck(0), addr)
        elif isinstance(packet, Ack | Data):
            _once(self.started, packet)
        elif isinstance(packet, Error):
            _once(self.error, packet)


@pytest_twisted.async_yield_fixture()
async def stallingTFTP(reactor: Any) -> Any:
    server = StallingTFTP()
    port = reactor.listenUDP(0, server, interface="127.0.0.1")
    yield server, f"127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tftpGetCtrlC(reactor: Any, stallingTFTP: Any, tmp_path: Any) -> None:
    """
    Ctrl-C during tftp get: the server gets an ERROR, the temporary file is removed,
    one line, exit 130.
    """
    server, target = stallingTFTP
    argv = udpsuite("tftp", "get", target, "big.img", str(tmp_path / "big.img"), "--no-options")
    process = BackgroundProcess(reactor, argv, usePTY=True)
    try:
        await server.started.addTimeout(15, reactor)
        assert len(os.listdir(tmp_path)) == 1  # the hidden temporary file
        await interrupted(process, "tftp", rb"get big\.img .*interrupted")
        error = await server.error.addTimeout(5, reactor)
        assert error.message == "Transfer cancelled"
        assert os.listdir(tmp_path) == []
    finally:
        await process.stop()


@pytest_twisted.ensureDeferred
async def test_tftpPutCtrlC(reactor: Any, stallingTFTP: Any, tmp_path: Any) -> None:
    """Ctrl-C during tftp put: the server gets an ERROR; one line, exit 130."""
    server, target = stallingTFTP
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(100_000))
    argv = udpsuite("tftp", "put", target, str(local), "up.bin", "--no-options")
    process = BackgroundProcess(reactor, argv, usePTY=True)
    try:
        await server.started.addTimeout(15, reactor)
        await interrupted(process, "tftp", rb"put up\.bin .*interrupted")
        assert (await server.error.addTimeout(5, reactor)).message == "Transfer cancelled"
    finally:
        await process.stop()


class _StallingFileServer(Protocol):
    """Answers the first request with a head and 64 KiB of a 1 MiB body, then stalls."""

    def dataReceived(self, data: bytes) -> None:
        if b"\n" in data:
            head = encodeResponseHead(200, "OK", size=1 << 20, offset=0, version="abc1")
            self.transport.write(head + b"x" * 65536)
            _once(self.factory.requested, data)  # type: ignore[attr-defined]


@pytest_twisted.async_yield_fixture()
async def stallingFiles(reactor: Any) -> Any:
    factory = Factory.forProtocol(_StallingFileServer)
    factory.requested = Deferred()  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield factory, f"127.0.0.1:{port.getHost().port}"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_fetchCtrlCKeepsThePart(reactor: Any, stallingFiles: Any, tmp_path: Any) -> None:
    """Ctrl-C during fetch keeps the resumable part, says so, and exits 130."""
    _, target = stallingFiles
    local = tmp_path / "big.bin"
    process = BackgroundProcess(reactor, udpsuite("fetch", target, "big.bin", str(local)),
                                usePTY=True)  # fmt: skip
    try:
        await process.waitFor(rb"big\.bin")  # the progress bar: the part file is open
        await interrupted(process, "fetch", rb"interrupted; partial kept as .*big\.bin\.part")
        assert (tmp_path / "big.bin.part").exists() and not local.exists()
    finally:
        await process.stop()


@pytest_twisted.ensureDeferred
async def test_lsCtrlC(reactor: Any) -> None:
    """Ctrl-C while ls waits for an answer: one line, exit 130."""
    factory = Factory.forProtocol(Protocol)
    connected: Deferred[None] = Deferred()
    factory.buildProtocol = lambda addr: (_once(connected, None), Protocol())[1]  # type: ignore[method-assign]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    process = BackgroundProcess(reactor, udpsuite("ls", f"127.0.0.1:{port.getHost().port}"),
                                usePTY=True)  # fmt: skip
    try:
        await connected.addTimeout(15, reactor)
        await interrupted(process, "ls")
    finally:
        await process.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_echoCtrlCPrintsTheSummaryFirst(reactor: Any) -> None:
    """Ctrl-C during echo prints the statistics, as ping does, then one line; exit 130."""
    service = EchoService(port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    assert service.udpPort is not None
    target = f"127.0.0.1:{service.udpPort.getHost().port}"
    process = BackgroundProcess(reactor, udpsuite("echo", target, "-c", "1000", "-i", "0.05"),
                                usePTY=True)  # fmt: skip
    try:
        await process.waitFor(rb"seq=2 ")
        out = await interrupted(process, "echo")
        summary = out.index(f"--- {target} echo statistics ---".encode())
        assert re.search(rb"\d+ probes sent, \d+ received", out[summary:])
        assert summary < out.index(b"udpsuite echo: interrupted")
    finally:
        await process.stop()
        await service.stopService()


class _Sink(DatagramProtocol):
    def __init__(self) -> None:
        self.got: Deferred[Any] = Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        _once(self.got, (data, addr))


@pytest_twisted.ensureDeferred
async def test_sendWaitCtrlC(reactor: Any) -> None:
    """Ctrl-C during send --wait: one line, exit 130."""
    sink = _Sink()
    port = reactor.listenUDP(0, sink, interface="127.0.0.1")
    argv = udpsuite("send", f"127.0.0.1:{port.getHost().port}", "hello", "--wait", "60")
    process = BackgroundProcess(reactor, argv, usePTY=True)
    try:
        await sink.got.addTimeout(15, reactor)
        await interrupted(process, "send")
    finally:
        await process.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_chatCtrlC(reactor: Any) -> None:
    """
    Ctrl-C in chat (in cbreak mode on the terminal) ends it with one line and exit 130,
    several times in a row (it used to end in a TypeError from stopListening's None).
    """
    sink = _Sink()
    port = reactor.listenUDP(0, sink, interface="127.0.0.1")
    try:
        for _ in range(3):
            argv = udpsuite("chat", f"127.0.0.1:{port.getHost().port}")
            process = BackgroundProcess(reactor, argv, usePTY=True)
            try:
                await process.waitFor(rb"talking to 127\.0\.0\.1:\d+\r\n> ")
                await interrupted(process, "chat")
            finally:
                await process.stop()
    finally:
        await port.stopListening()


@pytest_twisted.async_yield_fixture()
async def namespaceResponder(reactor: Any, loopbackNamespace: list[str]) -> Any:
    """A responder on 127.0.0.1:9998 in a namespace of the test's own (discover broadcasts)."""
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite",
            "responder", "--interface", "127.0.0.1", "--name", "nsresponder"]  # fmt: skip
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(rb"listening on 127\.0\.0\.1:9998")
        yield loopbackNamespace
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_discoverCtrlC(reactor: Any, namespaceResponder: list[str]) -> None:
    """Ctrl-C while discover listens: one line, exit 130 (inside the test's namespace)."""
    argv = [*namespaceResponder, *udpsuite("discover", "--to", "127.0.0.1", "--timeout", "60")]
    process = BackgroundProcess(reactor, argv, usePTY=True)
    try:
        await process.waitFor(rb"nsresponder")
        await interrupted(process, "discover")
    finally:
        await process.stop()


# Closed standard output


class _OutputClosed(ProcessProtocol):
    """
    Runs a program whose standard output has no reader from the start, as after
    C{| head -c 0}: whatever it writes there fails with EPIPE.
    """

    def __init__(self) -> None:
        self.err = bytearray()
        self.done: Deferred[tuple[bytes, int]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeChildFD(1)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = -1
        if reason.check(ProcessDone):
            code = 0
        elif reason.check(ProcessTerminated):
            code = reason.value.exitCode if reason.value.exitCode is not None else -1
        self.done.callback((bytes(self.err), code))


async def withOutputClosed(
    reactor: Any, argv: list[str], stdin: bytes = b"", path: str | None = None
) -> bytes:
    """Run C{argv} (in C{path}) with no reader on its stdout; check it ends quietly, exit 141."""
    proto = _OutputClosed()
    reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ), path=path)
    if stdin:
        proto.transport.write(stdin)
    try:
        err, code = await proto.done.addTimeout(30, reactor)
    except Exception:
        proto.transport.signalProcess("KILL")
        raise
    assert (code, err) == (141, b""), err
    return err


@pytest_twisted.ensureDeferred
async def test_tftpGetIntoHead(reactor: Any) -> None:
    """
    The issue's own pipeline, C{tftp get HOST FILE - | head -1}: no traceback, the
    server gets an ERROR (not blamed for a broken pipe), exit status 141.
    """
    bash = requirePeer("bash")
    server = FakeServer(reactor, {b"big.txt": b"line\n" * 400_000})
    port = reactor.listenUDP(0, server, interface="127.0.0.1", maxPacketSize=65536)
    try:
        command = (f"{venvScript('udpsuite')} tftp get 127.0.0.1:{port.getHost().port} "
                   'big.txt - | head -1; echo "status ${PIPESTATUS[0]}" >&2')  # fmt: skip
        out, err, code = await runProcess(reactor, [bash, "-c", command], timeout=30)
        assert (out, err, code) == (b"line\n", b"status 141\n", 0)
        [session] = server.sessions
        await eventually(reactor, lambda: session.errors)
        assert [e.message for e in session.errors] == ["Transfer cancelled"]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tftpGetToClosedOutput(reactor: Any) -> None:
    """tftp get - with no reader at all: quiet, ERROR to the server, exit 141."""
    server = FakeServer(reactor, {b"f": os.urandom(200_000)})
    port = reactor.listenUDP(0, server, interface="127.0.0.1", maxPacketSize=65536)
    try:
        argv = udpsuite("tftp", "get", f"127.0.0.1:{port.getHost().port}", "f", "-")
        await withOutputClosed(reactor, argv)
        [session] = server.sessions
        await eventually(reactor, lambda: session.errors)
        assert [e.message for e in session.errors] == ["Transfer cancelled"]
    finally:
        await port.stopListening()


@pytest_twisted.async_yield_fixture()
async def fileService(reactor: Any, tmp_path: Any) -> Any:
    root = tmp_path / "served"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(4 << 20))
    for i in range(2000):
        (root / f"entry-{i:04}").write_bytes(b"")
    service = FileService(FilePath(str(root)), port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    assert service.listening is not None
    yield root, f"127.0.0.1:{service.listening.getHost().port}"
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_fetchAndLsToClosedOutput(reactor: Any, fileService: Any, tmp_path: Any) -> None:
    """fetch - and ls with no reader on stdout: quiet, exit 141 (and no file named '-')."""
    _, target = fileService
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    await withOutputClosed(reactor, udpsuite("fetch", target, "big.bin", "-"), path=str(cwd))
    await withOutputClosed(reactor, udpsuite("ls", target), path=str(cwd))
    assert os.listdir(cwd) == []


@pytest_twisted.ensureDeferred
async def test_echoAndSendToClosedOutput(reactor: Any) -> None:
    """echo, and send --wait with a reply to show, with no reader on stdout: quiet, 141."""
    service = EchoService(port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    assert service.udpPort is not None
    target = f"127.0.0.1:{service.udpPort.getHost().port}"
    try:
        await withOutputClosed(reactor, udpsuite("echo", target, "-c", "100", "-i", "0.05"))
        await withOutputClosed(reactor, udpsuite("send", target, "hi", "--wait", "30"))
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_chatToClosedOutput(reactor: Any) -> None:
    """chat with no reader on stdout ends quietly, exit 141."""
    sink = _Sink()
    port = reactor.listenUDP(0, sink, interface="127.0.0.1")
    try:
        argv = udpsuite("chat", f"127.0.0.1:{port.getHost().port}")
        await withOutputClosed(reactor, argv, stdin=b"hello\n")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_discoverToClosedOutput(reactor: Any, namespaceResponder: list[str]) -> None:
    """discover with no reader on stdout: quiet, exit 141 (inside the test's namespace)."""
    argv = [*namespaceResponder, *udpsuite("discover", "--to", "127.0.0.1", "--timeout", "30")]
    await withOutputClosed(reactor, argv)


@pytest_twisted.ensureDeferred
async def test_helpIntoHead(reactor: Any) -> None:
    """--help into a closed pipe: no traceback, exit 141."""
    await withOutputClosed(reactor, udpsuite("tftp", "get", "--help"))
