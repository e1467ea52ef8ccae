"""
The zero-copy paths on real sockets on 127.0.0.1: the server's sendfile sender (a
cached digest) and the client's splice reader; byte-identical, resumable, paced by a
slow reader; and the in-memory fallbacks.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath

from tests.files.helpers import Reader, pumpBody, serve
from tests.files.test_integration import _fetchUntil, addressOf, fileSha, writeBlocks
from twisted_udpsuite.files import client, clientprotocol, senders, sinks
from twisted_udpsuite.files.service import FileService
from twisted_udpsuite.files.wire import Fetch, Stat, encodeRequest

pytestmark = pytest.mark.integration

SIZE = (24 << 20) + 12345


class Spy:
    """Records the senders the server picks and the bytes the client splices."""

    def __init__(self, monkeypatch: Any) -> None:
        self.senders: list[senders.BodySender] = []
        self.spliced = 0
        spy = self

        class Copying(senders.BodySender):
            def start(self) -> None:
                spy.senders.append(self)
                super().start()

        class Sendfile(senders.SendfileSender):
            def start(self) -> None:
                spy.senders.append(self)
                super().start()

        monkeypatch.setattr(senders, "BodySender", Copying)
        monkeypatch.setattr(senders, "SendfileSender", Sendfile)
        original = sinks.FetchSink.onSpliced

        def onSpliced(sink: Any, pipe: int, length: int) -> None:
            spy.spliced += length
            original(sink, pipe, length)

        monkeypatch.setattr(sinks.FetchSink, "onSpliced", onSpliced)

    def kinds(self) -> list[str]:
        return [
            "sendfile" if isinstance(s, senders.SendfileSender) else "copy" for s in self.senders
        ]


@pytest_twisted.async_yield_fixture()
async def served(reactor: Any, tmp_path: Any) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    digest = writeBlocks(root / "f.bin", SIZE)
    svc = FileService(FilePath(str(root)), port=0, interface="127.0.0.1", reactor=reactor)
    svc.startService()
    yield svc, digest
    await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_sendfileColdThenCached(
    reactor: Any, served: tuple[FileService, str], tmp_path: Any, monkeypatch: Any
) -> None:
    """
    Both downloads go out with sendfile: the first (digest not cached) is hashed by
    reading back what was sent, the second uses the digest that cached; the client
    splices both; all byte-identical.
    """
    svc, digest = served
    spy = Spy(monkeypatch)
    path = os.path.join(svc.root.path, "f.bin")
    version = senders.fileVersion(os.stat(path))
    for name in ("a.bin", "b.bin"):
        local = FilePath(str(tmp_path / name))
        result = await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(60, reactor)
        assert result.sha256 == digest == fileSha(local.path) and result.size == SIZE
        assert svc.factory.digestFor(version) == digest
    assert spy.kinds() == ["sendfile", "sendfile"]
    assert spy.senders[0]._hasher is not None and spy.senders[1]._hasher is None
    assert spy.senders[1].sent == SIZE
    assert SIZE - (1 << 20) < spy.spliced // 2 <= SIZE


@pytest_twisted.ensureDeferred
async def test_sendfileHashBacklogWaits(
    reactor: Any, served: tuple[FileService, str], tmp_path: Any, monkeypatch: Any
) -> None:
    """
    With a tiny range budget the server's hasher falls behind: the sendfile sender
    waits for it and goes on; the body and the digest are still right.
    """
    svc, digest = served
    pauses: list[bool] = []

    class SmallBudget(senders.StreamHasher):
        def __init__(self, reactor: Any, backlog: Any, **kwargs: Any) -> None:
            def recorded(behind: bool) -> None:
                pauses.append(behind)
                backlog(behind)

            super().__init__(reactor, recorded, **{**kwargs, "rangeHigh": 1 << 20})

    monkeypatch.setattr(senders, "StreamHasher", SmallBudget)
    local = FilePath(str(tmp_path / "f.bin"))
    result = await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(60, reactor)
    assert result.sha256 == digest == fileSha(local.path)
    assert True in pauses and pauses[-1] is False


@pytest.mark.parametrize("cached", [True, False])
@pytest_twisted.ensureDeferred
async def test_sendfileResume(
    reactor: Any, served: tuple[FileService, str], tmp_path: Any, monkeypatch: Any, cached: bool
) -> None:
    """
    A resume, with the digest cached or not (then the server hashes the skipped
    prefix, then what it sends): sendfile from the part's size, byte-identical.
    """
    svc, digest = served
    if cached:
        await client.fetch(reactor, addressOf(svc), "f.bin", FilePath(str(tmp_path / "warm")))
    spy = Spy(monkeypatch)
    local = FilePath(str(tmp_path / "f.bin"))
    await _fetchUntil(reactor, addressOf(svc), "f.bin", local, SIZE // 2)
    part = os.path.getsize(local.path + ".part")
    assert 0 < part < SIZE
    result = await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(60, reactor)
    assert result.resumedFrom == part and result.received == SIZE - part
    assert fileSha(local.path) == digest == result.sha256
    assert spy.kinds() == ["sendfile", "sendfile"]
    assert spy.senders[1].sent == SIZE - part
    assert (spy.senders[1]._hasher is None) == cached


@pytest_twisted.ensureDeferred
async def test_sendfileDisabled(reactor: Any, tmp_path: Any, monkeypatch: Any) -> None:
    """C{sendfile=False}: a cached digest still goes through the copying sender."""
    root = tmp_path / "root"
    root.mkdir()
    digest = writeBlocks(root / "f.bin", 3 << 20)
    svc = FileService(FilePath(str(root)), port=0, interface="127.0.0.1", reactor=reactor,
                      sendfile=False)  # fmt: skip
    svc.startService()
    try:
        spy = Spy(monkeypatch)
        for name in ("a", "b"):
            local = FilePath(str(tmp_path / name))
            await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(30, reactor)
            assert fileSha(local.path) == digest
        assert spy.kinds() == ["copy", "copy"]
    finally:
        await svc.stopService()


@pytest.mark.parametrize("cached", [True, False])
@pytest_twisted.ensureDeferred
async def test_sendfileRefusedFallsBackToCopying(
    reactor: Any, served: tuple[FileService, str], tmp_path: Any, monkeypatch: Any, cached: bool
) -> None:
    """
    A file the kernel will not sendfile (EINVAL, as some filesystems answer) midway:
    the body goes on through the copying sender, on the same connection, intact (and
    without a cached digest, that sender hashes the part already sent, then the rest).
    """
    svc, digest = served
    path = os.path.join(svc.root.path, "f.bin")
    if cached:
        svc.factory.rememberDigest(senders.fileVersion(os.stat(path)), digest)
    spy = Spy(monkeypatch)
    realSendfile = os.sendfile
    calls = [0]

    def sendfile(out: int, in_: int, offset: int, count: int) -> int:
        calls[0] += 1
        if calls[0] > 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        return realSendfile(out, in_, offset, min(count, 100000))

    monkeypatch.setattr(senders.os, "sendfile", sendfile)
    local = FilePath(str(tmp_path / "f.bin"))
    result = await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(60, reactor)
    assert result.sha256 == digest == fileSha(local.path)
    assert spy.kinds() == ["sendfile", "copy"]
    assert spy.senders[0].sent == 200000 and spy.senders[1].sent == SIZE


class Pipeliner(protocol.Protocol):
    """Sends several requests in one write and parses every answer."""

    def __init__(self, requests: list[Any]) -> None:
        self.requests = requests
        self.reader = Reader(*(isinstance(r, Fetch) for r in requests))
        self.done: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"".join(encodeRequest(r) for r in self.requests))

    def dataReceived(self, data: bytes) -> None:
        if len(self.reader.feed(data)) == len(self.requests):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.reader.responses)


class SlowReader(Pipeliner):
    """Asks for one FETCH, stops reading at once, and collects what it is later given."""

    def __init__(self) -> None:
        super().__init__([Fetch("f.bin")])

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        super().connectionMade()


@pytest_twisted.ensureDeferred
async def test_sendfileSlowReader(
    reactor: Any, served: tuple[FileService, str], monkeypatch: Any
) -> None:
    """
    A reader that stops reading stalls the sendfile sender at the socket buffers, with
    nothing piling up in the server's transport; once it reads, the body completes.
    """
    svc, digest = served
    path = os.path.join(svc.root.path, "f.bin")
    svc.factory.rememberDigest(senders.fileVersion(os.stat(path)), digest)
    spy = Spy(monkeypatch)
    reader = SlowReader()
    factory = protocol.ClientFactory.forProtocol(lambda: reader)
    reactor.connectTCP(*addressOf(svc), factory)
    await deferLater(reactor, 0.5, lambda: None)
    [sender] = spy.senders
    assert isinstance(sender, senders.SendfileSender)
    stalled = sender.sent
    await deferLater(reactor, 0.2, lambda: None)
    transport = sender._protocol.transport
    assert sender.sent == stalled < SIZE // 2
    assert len(transport.dataBuffer) + transport._tempDataLen < 1024
    reader.transport.resumeProducing()
    [(head, body, trailer)] = await reader.done.addTimeout(30, reactor)
    assert head.size == SIZE and trailer is not None and trailer.sha256 == digest
    assert body == (svc.root.child("f.bin").getContent())


def test_inMemoryFallback(tmp_path: Any) -> None:
    """
    On an in-memory transport a cached digest still uses the copying sender, and the
    client never installs its splice reader.
    """
    (tmp_path / "f").write_bytes(os.urandom(2 << 20))
    clock, factory, proto, tr = serve(tmp_path)
    for _ in range(2):
        proto.dataReceived(encodeRequest(Fetch("f")))
        assert type(proto._sender) is senders.BodySender
        pumpBody(clock, tr)
    first, second = Reader(True, True).feed(tr.value())
    assert first[1] == second[1] and first[2] == second[2]
    assert not senders.canSendfile(tr)
    assert not clientprotocol.canSplice(StringTransport())


@pytest.mark.parametrize("refused", ["socket", "file"])
@pytest_twisted.ensureDeferred
async def test_spliceRefusedFallsBackToReading(
    reactor: Any, served: tuple[FileService, str], tmp_path: Any, monkeypatch: Any, refused: str
) -> None:
    """
    A socket or a destination file that takes no splice (EINVAL): the client copies
    what its pipe holds and reads the rest of the body the ordinary way, intact.
    """
    svc, digest = served
    spy = Spy(monkeypatch)
    realSplice = os.splice
    calls = [0]

    def splice(src: int, dst: int, count: int, **kwargs: Any) -> int:
        toFile = "offset_dst" in kwargs
        calls[0] += 1
        if (refused == "file") == toFile and calls[0] > 4:
            raise OSError(errno.EINVAL, "Invalid argument")
        return realSplice(src, dst, count, **kwargs)

    monkeypatch.setattr(client.os, "splice", splice)
    local = FilePath(str(tmp_path / "f.bin"))
    result = await client.fetch(reactor, addressOf(svc), "f.bin", local).addTimeout(60, reactor)
    assert result.sha256 == digest == fileSha(local.path) and result.size == SIZE
    assert 0 < spy.spliced < SIZE // 2


@pytest_twisted.ensureDeferred
async def test_sendfilePipelined(
    reactor: Any, served: tuple[FileService, str], monkeypatch: Any
) -> None:
    """
    Pipelined requests on one real connection: each sendfile body starts only after
    the answers before it, and its trailer follows it; all in order and intact.
    """
    svc, digest = served
    path = os.path.join(svc.root.path, "f.bin")
    svc.factory.rememberDigest(senders.fileVersion(os.stat(path)), digest)
    spy = Spy(monkeypatch)
    version = senders.fileVersion(os.stat(path))
    requests = [Stat("f.bin"), Fetch("f.bin"), Fetch("f.bin", 12345, version), Stat("f.bin")]
    asker = Pipeliner(requests)
    reactor.connectTCP(*addressOf(svc), protocol.ClientFactory.forProtocol(lambda: asker))
    responses = await asker.done.addTimeout(60, reactor)
    data = svc.root.child("f.bin").getContent()
    assert [head.status for head, _, _ in responses] == [200] * 4
    assert responses[1][1] == data and responses[2][1] == data[12345:]
    assert responses[1][2] == responses[2][2] and responses[1][2].sha256 == digest
    assert responses[0][0].version == responses[3][0].version == version
    assert spy.kinds() == ["sendfile", "sendfile"]
