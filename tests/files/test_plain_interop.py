"""
The plain protocol against the socket tutorials' own 文件下载器 programs, on 127.0.0.1:
their client (tutorial_client.py) against our --plain-port, and C{udpsuite fetch --plain}
against their server (tutorial_server.py), with a file over 100 MiB and names with
spaces and Chinese characters; confinement probes on a real plain port; Ctrl-C and a
closed standard output through the CLI's shared path.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from tests.files.test_integration import fileSha, writeBlocks
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.test_interruptions import interrupted, withOutputClosed
from twisted_udpsuite.files.service import FileService

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
TUTORIAL_CLIENT = str(HERE / "tutorial_client.py")
TUTORIAL_SERVER = str(HERE / "tutorial_server.py")
#: Over the issue's 100 MiB, and not a multiple of any buffer size.
BIG = 128 * 1024 * 1024 + 7
BIG_NAME = "大文件 big file.bin"
SMALL_NAME = "小 文件.txt"


@pytest.fixture(scope="module")
def served(tmp_path_factory: Any) -> Any:
    """A root with a big and a small file (Chinese names with spaces); their sha256s."""
    base = tmp_path_factory.mktemp("plain")
    root = base / "root"
    root.mkdir()
    digest = writeBlocks(root / BIG_NAME, BIG)
    (root / SMALL_NAME).write_bytes("你好, plain world\n".encode())
    (base / "secret").write_bytes(b"outside the root")
    yield root, digest
    os.unlink(root / BIG_NAME)


@pytest_twisted.async_yield_fixture()
async def plainService(reactor: Any, served: Any) -> Any:
    svc = FileService(FilePath(str(served[0])), port=0, interface="127.0.0.1", plainPort=0,
                      reactor=reactor)  # fmt: skip
    svc.startService()
    assert svc.plainListening is not None
    yield svc, svc.plainListening.getHost().port
    await svc.stopService()


async def tutorialClient(reactor: Any, cwd: Path, port: int, name: str) -> bytes:
    """Run the tutorial client in C{cwd}; its output line."""
    out, err, code = await runProcess(
        reactor, [sys.executable, TUTORIAL_CLIENT, "127.0.0.1", str(port), name],
        path=str(cwd), timeout=120,
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest_twisted.ensureDeferred
async def test_tutorialClientAgainstOurServer(
    reactor: Any, served: Any, plainService: Any, tmp_path: Path
) -> None:
    """
    The tutorial client, unchanged, gets the big file byte-identical as "[接收]NAME", and
    the small one; for a missing name it receives nothing and saves nothing.
    """
    root, digest = served
    _, port = plainService
    out = await tutorialClient(reactor, tmp_path, port, BIG_NAME)
    assert out == f"saved {BIG} bytes\n".encode()
    assert fileSha(tmp_path / f"[接收]{BIG_NAME}") == digest
    os.unlink(tmp_path / f"[接收]{BIG_NAME}")
    await tutorialClient(reactor, tmp_path, port, SMALL_NAME)
    assert (tmp_path / f"[接收]{SMALL_NAME}").read_bytes() == (root / SMALL_NAME).read_bytes()
    out = await tutorialClient(reactor, tmp_path, port, "no such file.txt")
    assert out == b"nothing received\n"
    assert sorted(os.listdir(tmp_path)) == [f"[接收]{SMALL_NAME}"]


class _Probe(Protocol):
    """Sends C{name} (raw bytes), collects the answer until the server closes."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.name)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.received)


async def probe(reactor: Any, port: int, name: bytes) -> bytes:
    proto = _Probe(name)
    factory = ClientFactory.forProtocol(lambda: proto)
    reactor.connectTCP("127.0.0.1", port, factory)
    return await proto.done.addTimeout(10, reactor)


@pytest.mark.parametrize(
    "name",
    [
        b"../secret",
        b"../root/../secret",
        b"/etc/passwd",  # absolute: below the root, where there is none
        b"/etc/hostname\n",
        "小 文件.txt\x00../../secret".encode(),
        b"\x00",
        b"%2e%2e/secret",
    ],
)
@pytest_twisted.ensureDeferred
async def test_confinementProbes(reactor: Any, plainService: Any, name: bytes) -> None:
    """On a real plain port, escapes and NUL get a close with nothing sent."""
    _, port = plainService
    assert await probe(reactor, port, name) == b""


@pytest_twisted.ensureDeferred
async def test_probeControls(reactor: Any, served: Any, plainService: Any) -> None:
    """The same raw client does get a file it may have (the probes above can fail)."""
    root, _ = served
    answer = await probe(reactor, plainService[1], SMALL_NAME.encode() + b"\r\n")
    assert answer == (root / SMALL_NAME).read_bytes()


def udpsuite(*args: str) -> list[str]:
    return [venvScript("udpsuite"), *args]


@pytest_twisted.ensureDeferred
async def test_ourClientAgainstTutorialServer(reactor: Any, served: Any, tmp_path: Path) -> None:
    """
    udpsuite fetch --plain against the tutorial server: the big file byte-identical, the
    small one to standard output; a missing file is one line, exit status 1, no file.
    """
    root, digest = served
    server = BackgroundProcess(reactor, [sys.executable, TUTORIAL_SERVER, "3"], path=str(root))
    try:
        port = int((await server.waitFor(rb"listening (\d+)")).group(1))
        target = f"127.0.0.1:{port}"
        local = tmp_path / "big.bin"
        out, err, code = await runProcess(
            reactor, udpsuite("fetch", "--plain", target, BIG_NAME, str(local)), timeout=120
        )
        assert (code, out, err) == (0, b"", b"")
        assert fileSha(local) == digest
        out, err, code = await runProcess(
            reactor, udpsuite("fetch", "--plain", target, SMALL_NAME, "-")
        )
        assert (code, out, err) == (0, (root / SMALL_NAME).read_bytes(), b"")
        out, err, code = await runProcess(
            reactor, udpsuite("fetch", "--plain", target, "no such file.txt"), path=str(tmp_path)
        )
        assert code == 1 and out == b"" and err.count(b"\n") == 1
        assert b"missing, refused or empty" in err
        assert os.listdir(tmp_path) == ["big.bin"]
        _, _, code = await server.ended(timeout=20)  # it served its three connections
        assert code == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_twistdPlainPort(reactor: Any, served: Any, tmp_path: Path) -> None:
    """
    twistd -n udpsuite files --plain-port: the tutorial client gets the file, the log
    has one line per request saying what happened, refusals included.
    """
    root, _ = served
    server = BackgroundProcess(
        reactor,
        [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "files", "--root", str(root),
         "--port", "0", "--plain-port", "0", "--interface", "127.0.0.1"],
        path=str(tmp_path),
    )  # fmt: skip
    try:
        match = await server.waitFor(rb"files-plain listening on 127\.0\.0\.1:(\d+)")
        port = int(match.group(1))
        await tutorialClient(reactor, tmp_path, port, SMALL_NAME)
        assert (tmp_path / f"[接收]{SMALL_NAME}").read_bytes() == (root / SMALL_NAME).read_bytes()
        await server.waitFor(
            rb"PLAIN '\xe5\xb0\x8f \xe6\x96\x87\xe4\xbb\xb6\.txt' from 127\.0\.0\.1:\d+: ok, "
            + str(len((root / SMALL_NAME).read_bytes())).encode()
        )
        assert await tutorialClient(reactor, tmp_path, port, "../secret") == b"nothing received\n"
        await server.waitFor(rb"PLAIN '\.\./secret' from .*: 403 path refused \(.*\), nothing sent")
    finally:
        await server.stop()


class _Stalling(Protocol):
    """
    A plain server that sends 64 KiB of the answer and then nothing.  It is not
    half-closeable: the client's EOF would close it (the client sends none).
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"x" * 65536)


@pytest_twisted.ensureDeferred
async def test_fetchPlainCtrlC(reactor: Any, tmp_path: Path) -> None:
    """Ctrl-C during fetch --plain: one line, exit status 130, nothing kept."""
    port = reactor.listenTCP(0, Factory.forProtocol(_Stalling), interface="127.0.0.1")
    local = tmp_path / "stalled.bin"
    target = f"127.0.0.1:{port.getHost().port}"
    process = BackgroundProcess(reactor, udpsuite("fetch", "--plain", target, "x", str(local)),
                                usePTY=True)  # fmt: skip
    try:
        await process.waitFor(rb"stalled\.bin")  # the progress bar: bytes have arrived
        out = await interrupted(process, "fetch", rb"interrupted; nothing kept")
        assert re.search(rb"64\.0 KiB", out)
        assert os.listdir(tmp_path) == []
    finally:
        await process.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_fetchPlainToClosedOutput(reactor: Any, plainService: Any, tmp_path: Path) -> None:
    """fetch --plain NAME - with no reader on stdout: quiet, exit 141, no file named '-'."""
    _, port = plainService
    argv = udpsuite("fetch", "--plain", f"127.0.0.1:{port}", BIG_NAME, "-")
    await withOutputClosed(reactor, argv, path=str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest_twisted.ensureDeferred
async def test_socketActivatedPlainPort(
    reactor: Any, loopbackNamespace: list[str], served: Any, tmp_path: Path
) -> None:
    """
    systemd-socket-activate hands the plain port over as FileDescriptorName=files-plain:
    the tutorial client's connection starts twistd, which adopts the socket and answers.
    """
    root, _ = served
    activate = requirePeer("systemd-socket-activate")
    argv = [
        *loopbackNamespace, activate, "-l", "127.0.0.1:8001", "--fdname=files-plain",
        venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "files", "--root", str(root),
        "--port", "0", "--plain-port", "8001",
    ]  # fmt: skip
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(rb"Listening on 127\.0\.0\.1:8001 as 3")
        out, err, code = await runProcess(
            reactor,
            [*loopbackNamespace, sys.executable, TUTORIAL_CLIENT, "127.0.0.1", "8001", SMALL_NAME],
            path=str(tmp_path), timeout=60,
        )  # fmt: skip
        assert code == 0 and out.startswith(b"saved "), err
        assert (tmp_path / f"[接收]{SMALL_NAME}").read_bytes() == (root / SMALL_NAME).read_bytes()
        assert b"files-plain listening on 127.0.0.1:8001 (TCP, inherited)" in server.output
    finally:
        await server.stop()
