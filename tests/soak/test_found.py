"""
Regular tests for what the soak, crash and fuzz runs of #16 found (not marked C{soak}: each
is small and runs with the rest of the suite).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.logger import capturedLogs, formatEvent
from twisted.python.filepath import FilePath

from tests.chat.helpers import ROOM, makeRoom
from twisted_udpsuite.chat.peer import ChatPeerProtocol
from twisted_udpsuite.chat.room import RoomPolicy
from twisted_udpsuite.paths import AtomicFileWriter
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import client
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService


@pytest.fixture
def noCollection() -> Iterator[None]:
    """No garbage collection meanwhile: what only a collection would free stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def descriptorsOf(path: Path) -> list[str]:
    """Our open file descriptors on C{path}."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except FileNotFoundError:
            continue
    return found


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_downloadClosesTheServedFile(
    reactor: Any, tmp_path: Path, noCollection: None
) -> None:
    """
    Found by the TFTP soak (#16 §1): a download sent from the file's mapping kept the file
    open after it ended (the map's own descriptor), until a garbage collection happened to
    free the session, which an idle server never does. Now the descriptor goes at the end.
    """
    served = tmp_path / "big"
    served.write_bytes(os.urandom(100_000))
    backend = FilesystemBackend(FilePath(str(tmp_path)))
    service = TFTPService(
        backend, ServerPolicy(rate=None), port=0, interface="127.0.0.1", reactor=reactor
    )
    service.startService()
    try:
        server = ("127.0.0.1", service.listeningPort.getHost().port)
        for windowsize in (1, 4):
            result = await client.get(
                reactor, server, "big", str(tmp_path / "got"), blksize=8192, windowsize=windowsize
            ).addTimeout(10, reactor)
            assert result.bytes == 100_000
            for _ in range(50):
                if not service.protocol.sessions:
                    break
                await task.deferLater(reactor, 0.1, lambda: None)
            assert not service.protocol.sessions
            assert descriptorsOf(served) == []
    finally:
        await service.stopService()


def test_youngUploadsAreReportedAtStart(tmp_path: Path) -> None:
    """
    Found by the crash test (#16 §1): restarted at once after a SIGKILL, the server said
    nothing of the uploads the kill cut (their files are too young to be taken for litter).
    Now it names them, and still leaves them (another process's upload looks the same).
    """
    root = FilePath(str(tmp_path))
    writer = AtomicFileWriter(root.child("cut.bin"), overwrite=False)
    writer.write(b"x" * 100)
    os.link(writer.tempPath.path, writer.tempPath.path + ".keep")
    temp = writer.tempPath
    writer.abort()
    os.rename(temp.path + ".keep", temp.path)
    backend = FilesystemBackend(root, writable=True)
    with capturedLogs() as events:
        assert backend.cleanStaleUploads() == []
    (event,) = [e for e in events if "youngUploads" in e]
    assert event["youngUploads"] == [temp.basename()]
    assert "left 1 unfinished uploads" in formatEvent(event)
    assert temp.exists()
    with capturedLogs() as events:
        FilesystemBackend(root).cleanStaleUploads()  # read-only: uploads are not its business
    assert events == []


def test_linesBeforeALateWelcomeAreRecovered() -> None:
    """
    Found by the chat room soak (#16 §3): when a member's first C{OK JOINED} was lost, the
    lines relayed to it until its retried JOIN was answered counted from the second
    welcome's backlog on; one of them lost meanwhile was never asked for (and no notice
    said so). Now the member owes itself everything from the first line it got.
    """
    net = MemoryNetwork(seed=1)
    makeRoom(net, RoomPolicy(backlog=2))
    aliceHost = net.addHost("192.0.2.100/24")
    alice = ChatPeerProtocol(aliceHost)
    aliceHost.listenUDP(5000, alice)
    alice.join(ROOM, "alice")
    net.advance(1)
    bobHost = net.addHost("192.0.2.101/24")
    bob = ChatPeerProtocol(bobHost, keepalive=5.0)
    bobHost.listenUDP(5000, bob)
    toBob = lambda r: r.destination[0] == "192.0.2.101"  # noqa: E731
    net.dropIf(lambda r: toBob(r) and r.data.startswith(b"OK JOINED") and r.time < 1.5)
    net.dropIf(lambda r: toBob(r) and b"<alice> second" in r.data and r.time < 2)
    bob.join(ROOM, "bob")
    net.advance(0.1)
    for text in ("first", "second", "third", "fourth", "fifth"):
        alice.say(text)
        net.advance(0.2)
    net.advance(20)
    shown = [m[2] for m in bob.display.messages if m[1] == "alice"]  # type: ignore[attr-defined]
    assert sorted(shown) == sorted(["first", "second", "third", "fourth", "fifth"])
    assert bob.state == "joined" and bob.missing() == []


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_httpBytesThatAreNotUTF8(reactor: Any, tmp_path: Path) -> None:
    """
    Found by the fuzzer (#16 §5): a Range header with a byte that is not UTF-8 made the
    file server's HTTP side log a traceback and answer 500; such a byte in the path, a
    traceback and 404. The Range is malformed, so ignored: the whole file, 200; the path
    names nothing: 404. Neither logs a failure.
    """
    from twisted.logger import globalLogPublisher

    from tests.conftest import requirePeer
    from tests.process import runProcess
    from twisted_udpsuite.files.http import httpSite

    (tmp_path / "f.bin").write_bytes(b"0123456789")
    listening = reactor.listenTCP(
        0, httpSite(FilePath(str(tmp_path)), reactor), interface="127.0.0.1"
    )
    failures: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_failure") or event.get("isError"):  # new and legacy (log.err)
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        url = f"http://127.0.0.1:{listening.getHost().port}/f.bin"
        curl = [requirePeer("curl"), "-sS", "-o", "-", "-w", "\n%{http_code}", url]
        out, err, code = await runProcess(reactor, [*curl, "-H", "Range: bytes=\udcf9-3"])
        plain, _, _ = await runProcess(reactor, [*curl, "-H", "Range: bytes=2-3"])
        curl[-1] = url.replace("f.bin", "f%ADbin")
        missing, _, _ = await runProcess(reactor, curl)
    finally:
        globalLogPublisher.removeObserver(observer)
        await listening.stopListening()
    assert (code, out) == (0, b"0123456789\n200"), (out, err)
    assert plain == b"23\n206"
    assert missing.endswith(b"\n404")
    assert failures == []


@pytest.mark.parametrize(
    "target",
    [b"\x92sub/", b"/caf\xc3\xa9", b"sub/", b"*"],
    ids=["not-ascii-no-slash", "raw-utf8", "no-slash", "asterisk"],
)
def test_httpTargetNotInOriginForm(tmp_path: Path, target: bytes) -> None:
    """
    Found by the fuzzer (#16 §5): C{GET \\x92sub/} made Twisted drop the first byte as if
    it were the slash, list C{sub/}, and fail rendering the raw target in the listing's
    title: a traceback and a 500. A target that is not ASCII, or not a path, is a 400
    with nothing logged as a failure.
    """
    from twisted.internet.testing import StringTransport

    from twisted_udpsuite.files.http import httpSite

    (tmp_path / "sub").mkdir()
    site = httpSite(FilePath(str(tmp_path)), task.Clock())
    channel = site.buildProtocol(None)
    transport = StringTransport()
    with capturedLogs() as events:
        channel.makeConnection(transport)
        channel.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:200]
    assert [formatEvent(e) for e in events if e.get("log_failure")] == []


def test_dropBoxTakesTwoFilesOfOneNameAtOnce(tmp_path: Path) -> None:
    """
    Found by the IPMsg fuzz (#16 §5; seeds 3 and 5, 4 s): two files of one name offered
    at once (one offer holding both, or two offers before the first fetch ended) were
    both fetched to the same free name; the second to finish could not be published over
    the first and was thrown away, although every byte of it had come (with seed 4, two
    fetches of one offer shared a part file: the second found it published away).
    Each now gets a name, and so a part file, of its own.
    """
    from tests.ipmsg.helpers import PREFIX, member
    from tests.ipmsg.test_files import connectTCP
    from tests.ipmsg.test_service import service
    from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory

    net = MemoryNetwork()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "report.txt").write_bytes(f"from {folder}\n".encode())
    alice = member(net, 1, "Alice")
    alice.peer.offers = FileOffers(alice.host)
    server = FileServerFactory(alice.peer.offers, alice.host)
    box = service(net, tmp_path, "--root", str(inbox), "--accept-files")
    box.startService()
    net.advance(1.1)
    paths = [FilePath(str(tmp_path / folder / "report.txt")) for folder in ("a", "b")]
    net.runUntil(alice.peer.offerFiles((f"{PREFIX}.10", 2425), paths, "both"))
    with capturedLogs() as events:
        pumps = [connectTCP(box.peer._reactor, server, alice.address[0]) for _ in paths]
        for pump in pumps:
            assert pump is not None
            pump.flush()
    assert sorted(p.read_bytes() for p in inbox.iterdir()) == [b"from a\n", b"from b\n"]
    assert sorted(p.name for p in inbox.iterdir()) == ["report (1).txt", "report.txt"]
    assert not [e for e in events if "failed" in e.get("log_format", "")]
    box.stopService()
    net.advance(1)


def test_dropBoxFetchesAtMostMaxFetchesAtOnce(tmp_path: Path) -> None:
    """
    Found reading the IPMsg fuzz's figures (#16 §5): one offer datagram may list hundreds
    of files, and the drop box opened a TCP fetch for each at once. Past C{maxFetches}
    an attachment is refused with a log line saying why; when a fetch ends there is room.
    """
    from tests.ipmsg.helpers import PREFIX, member
    from tests.ipmsg.test_files import connectTCP
    from tests.ipmsg.test_service import service
    from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory

    net = MemoryNetwork()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"f{n}.txt" for n in range(3)]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    alice = member(net, 1, "Alice")
    alice.peer.offers = FileOffers(alice.host)
    server = FileServerFactory(alice.peer.offers, alice.host)
    box = service(net, tmp_path, "--root", str(inbox), "--accept-files")
    box.dropBox.maxFetches = 2
    box.startService()
    net.advance(1.1)
    paths = [FilePath(str(tmp_path / name)) for name in names]
    with capturedLogs() as events:
        net.runUntil(alice.peer.offerFiles((f"{PREFIX}.10", 2425), paths, "three"))
        refused = [formatEvent(e) for e in events if "refused" in e.get("log_format", "")]
        assert refused == [
            f"ipmsg: refused f2.txt from {PREFIX}.1: 2 files are being fetched already"
        ]
        assert len(box.dropBox.fetching) == 2
        for _ in range(2):
            pump = connectTCP(box.peer._reactor, server, alice.address[0])
            assert pump is not None
            pump.flush()
    assert sorted(p.name for p in inbox.iterdir()) == ["f0.txt", "f1.txt"]
    assert box.dropBox.fetching == set()
    box.stopService()
    net.advance(1)


def test_utf8OptionMeansUTF8OnTheWire() -> None:
    """
    Found by the IPMsg wire fuzz (hypothesis, C{tests/ipmsg/test_wire.py::test_roundTrip},
    while this fuzz target was run with C{tests/ipmsg}): a packet with UTF8OPT but another
    code page was written in that code page, and every reader (ours too) decoded its
    header and body as UTF-8: C{\\x80} came back as C{"\\ufffd0\\ufffd0"}. UTF8OPT now
    means UTF-8 on the wire, whatever the packet's code page.
    """
    from twisted_udpsuite.ipmsg.wire import UTF8OPT, Mode, Packet, decodePacket

    command = Mode.SENDMSG | UTF8OPT
    packet = Packet("1", 7, "张", "pc", command, "\x80 你好", ("附件",), "gb18030")
    decoded = decodePacket(packet.toBytes(), encoding="gb18030")
    assert (decoded.user, decoded.body, decoded.extra) == ("张", "\x80 你好", ("附件",))
    plain = Packet("1", 7, "张", "pc", Mode.SENDMSG, "你好", (), "gb18030")
    assert "你好".encode("gb18030") in plain.toBytes()  # without UTF8OPT: its code page
