"""The file client in memory (iosim): download, resume, restart, verify, cancel."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.test.iosim import (
    ConnectionCompleter,
    IOPump,
    connect,
    makeFakeClient,
    makeFakeServer,
)

from tests.helpers import assertNoResult, failureResultOf, successResultOf
from twisted_udpsuite.files import client, clientprotocol, partfile
from twisted_udpsuite.files.server import FileServerFactory

ADDRESS = ("127.0.0.1", 8000)
STEP = 0.001


class Net:
    """A MemoryReactorClock with one file server listening, and a way to connect."""

    def __init__(self, root: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.factory = FileServerFactory(FilePath(str(root)), reactor=self.reactor, turnDelay=STEP)
        self.reactor.listenTCP(ADDRESS[1], self.factory, interface=ADDRESS[0])
        self.completer = ConnectionCompleter(self.reactor)

    def connect(self) -> IOPump:
        pump = self.completer.succeedOnce()
        assert pump is not None
        return pump

    def run(self, pump: IOPump, steps: int = 10000) -> None:
        """Move bytes and time until the connection is quiet and closed."""
        for _ in range(steps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                return
            self.reactor.advance(STEP)
        raise AssertionError("connection never finished")

    def interruptedFetch(self, local: FilePath) -> None:
        """A fetch of data.bin cut after one turn of body: leaves C{local}'s part file."""
        d = client.fetch(self.reactor, ADDRESS, "data.bin", local)
        pump = self.connect()
        self.step(pump, 1)
        pump.clientIO.abortConnection()
        pump.flush()
        failureResultOf(d, client.TransferInterrupted)

    def step(self, pump: IOPump, turns: int) -> None:
        """Let the server send C{turns} turns of body."""
        for _ in range(turns):
            pump.flush()
            self.reactor.advance(STEP)
        pump.flush()


@pytest.fixture
def root(tmp_path: Any) -> Any:
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    (served / "d").mkdir()
    (served / "d" / "x").write_bytes(b"xx")
    return served


@pytest.fixture
def local(tmp_path: Any) -> FilePath:
    out = tmp_path / "out"
    out.mkdir()
    return FilePath(str(out / "data.bin"))


def test_fetch(root: Any, local: FilePath) -> None:
    """A download lands whole under its name, with no part or sidecar left."""
    net = Net(root)
    seen: list[tuple[int, int | None]] = []
    d = client.fetch(
        net.reactor, ADDRESS, "data.bin", local, progress=lambda a, b: seen.append((a, b))
    )
    net.run(net.connect())
    result = successResultOf(d)
    data = (root / "data.bin").read_bytes()
    assert local.getContent() == data
    assert result.size == result.received == len(data) and result.resumedFrom == 0
    assert seen[-1] == (len(data), len(data))
    assert sorted(os.listdir(local.dirname())) == ["data.bin"]
    assert net.reactor.getDelayedCalls() == []


def test_interruptedThenResumed(root: Any, local: FilePath) -> None:
    """A cut connection keeps LOCAL.part; the next fetch resumes where it stopped."""
    net = Net(root)
    net.interruptedFetch(local)
    part = local.path + ".part"
    held = os.path.getsize(part)
    assert 0 < held < os.path.getsize(root / "data.bin")
    assert not local.exists()

    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    result = successResultOf(d)
    assert result.resumedFrom == held and result.received == result.size - held
    assert local.getContent() == (root / "data.bin").read_bytes()
    assert not os.path.exists(part) and not os.path.exists(part[:-5] + ".part.json")


def test_changedBetweenHalvesRestarts(root: Any, local: FilePath) -> None:
    """If the file was replaced since the part was written, the fetch restarts at 0."""
    net = Net(root)
    net.interruptedFetch(local)
    replacement = os.urandom(4 * 1024 * 1024)
    (root / "new").write_bytes(replacement)
    os.replace(root / "new", root / "data.bin")

    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    result = successResultOf(d)
    assert result.resumedFrom == 0 and local.getContent() == replacement


def test_corruptPartDetected(root: Any, local: FilePath) -> None:
    """A part whose bytes were damaged fails the digest check and is removed."""
    net = Net(root)
    net.interruptedFetch(local)
    with open(local.path + ".part", "r+b") as f:
        f.write(b"\0" * 16)
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    failureResultOf(d, client.DigestMismatch)
    assert not os.path.exists(local.path + ".part") and not local.exists()


def test_cancel(root: Any, local: FilePath) -> None:
    """Cancelling closes the connection, keeps the part for a resume and leaks no timer."""
    net = Net(root)
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    pump = net.connect()
    net.step(pump, 1)
    assertNoResult(d)
    d.cancel()
    pump.flush()
    failureResultOf(d, CancelledError)
    assert os.path.exists(local.path + ".part") and not local.exists()
    assert net.factory.limits.open == {}
    assert net.reactor.getDelayedCalls() == []


def test_cancelBeforeConnect(root: Any, local: FilePath) -> None:
    """Cancelling while connecting stops the connection attempt."""
    net = Net(root)
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    d.cancel()
    failureResultOf(d, CancelledError)
    assert not os.path.exists(local.path + ".part")


def test_notFound(root: Any, local: FilePath) -> None:
    """A refusal is a ServerError with the status, and nothing is written."""
    net = Net(root)
    d = client.fetch(net.reactor, ADDRESS, "nope", local)
    net.run(net.connect())
    f = failureResultOf(d, client.ServerError)
    assert f.value.status == 404
    assert os.listdir(local.dirname()) == []


def test_listAndStat(root: Any) -> None:
    """listDirectory and stat return parsed entries."""
    net = Net(root)
    d = client.listDirectory(net.reactor, ADDRESS, "")
    net.run(net.connect())
    entries = successResultOf(d)
    assert [(e.name, e.kind) for e in entries] == [("d", "dir"), ("data.bin", "file")]
    d2 = client.stat(net.reactor, ADDRESS, "d/x")
    net.run(net.connect())
    info = successResultOf(d2)
    assert info.kind == "file" and info.size == 2 and info.version


def test_pipelinedOnOneConnection(root: Any, tmp_path: Any) -> None:
    """The client protocol pipelines requests; answers come back in order."""
    net = Net(root)
    d = clientprotocol.connect(net.reactor, ADDRESS, 5, 5)
    from twisted.internet.defer import Deferred

    d = Deferred.fromCoroutine(d)
    pump = net.connect()
    pump.flush()
    proto = successResultOf(d)
    from twisted_udpsuite.files.wire import ListDir, Stat

    a = proto.request(Stat("d/x"), clientprotocol.ResponseSink())
    b = proto.request(ListDir("d"), clientprotocol.ResponseSink())
    c = proto.request(Stat("missing"), clientprotocol.ResponseSink())
    pump.flush()
    assert successResultOf(a)[0].fields["length"] == "2"
    assert b'"x"' in successResultOf(b)[1]
    assert successResultOf(c)[0].status == 404
    proto.transport.loseConnection()
    pump.flush()


def test_cancelQuery(root: Any) -> None:
    """Cancelling a listing closes its connection."""
    net = Net(root)
    d = client.listDirectory(net.reactor, ADDRESS, "")
    # Connected, request not yet moved: ConnectionCompleter.succeedOnce(greet=False) by
    # hand, as Twisted 24.7 (the lowest supported) has no greet there.
    clientFactory = net.reactor.tcpClients.pop(0)[2]
    net.reactor.connectors.pop(0)
    clientProto, serverProto = clientFactory.buildProtocol(None), net.factory.buildProtocol(None)
    pump = connect(
        serverProto,
        makeFakeServer(serverProto),
        clientProto,
        makeFakeClient(clientProto),
        greet=False,
        clock=net.reactor,
    )
    d.cancel()
    pump.flush()
    failureResultOf(d, CancelledError)
    assert pump.clientIO.disconnected and net.factory.limits.open == {}
    assert net.reactor.getDelayedCalls() == []


def test_limitRefusal(root: Any, local: FilePath) -> None:
    """A server over its per-host limit answers 429: a ServerError, nothing written."""
    net = Net(root)
    net.factory.limits.maxPerHost = 0
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    assert failureResultOf(d, client.ServerError).value.status == 429
    assert os.listdir(local.dirname()) == []


def _rewriteWhileSent(root: Any, net: Net, pump: Any) -> bytes:
    """Let a body start, then rewrite the file in place (a new version); its new bytes."""
    net.step(pump, 1)
    data = os.urandom(os.path.getsize(root / "data.bin"))
    with open(root / "data.bin", "r+b") as f:
        f.write(data)
    os.utime(root / "data.bin", ns=(1, 1))
    return data


def test_changedWhileSentRetriedOnce(root: Any, local: FilePath) -> None:
    """A 'changed' trailer: the part is dropped and the file fetched again, whole."""
    net = Net(root)
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    pump = net.connect()
    data = _rewriteWhileSent(root, net, pump)
    net.run(pump)
    assertNoResult(d)
    net.run(net.connect())
    result = successResultOf(d)
    assert result.resumedFrom == 0 and local.getContent() == data
    assert sorted(os.listdir(local.dirname())) == ["data.bin"]
    assert net.reactor.getDelayedCalls() == []


def test_changedTwiceFails(root: Any, local: FilePath) -> None:
    """Changed again during the retry (or no retry allowed): FileChanged, part removed."""
    for retries in (0, 1):
        net = Net(root)
        d = client.fetch(net.reactor, ADDRESS, "data.bin", local, retryChanged=retries)
        for _ in range(retries + 1):
            pump = net.connect()
            _rewriteWhileSent(root, net, pump)
            net.run(pump)
        failureResultOf(d, client.FileChanged)
        assert os.listdir(local.dirname()) == []
        assert net.reactor.getDelayedCalls() == []


def test_insufficientSpace(root: Any, local: FilePath, monkeypatch: Any) -> None:
    """
    Too little room for the rest of the file: InsufficientSpace before anything is
    written, the part of an earlier attempt kept; exactly enough room is enough.
    """
    size = os.path.getsize(root / "data.bin")
    net = Net(root)
    net.interruptedFetch(local)
    part = local.path + ".part"
    held = os.path.getsize(part)
    with open(part, "rb") as f:
        kept = f.read()
    sidecar = local.siblingExtension(".part.json").getContent()

    free = [size - held - 1]
    monkeypatch.setattr(partfile, "freeSpace", lambda directory: free[0])
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    failure = failureResultOf(d, client.InsufficientSpace)
    assert f"{size - held} bytes to write, {size - held - 1} free" in str(failure.value)
    with open(part, "rb") as f:
        assert f.read() == kept
    assert local.siblingExtension(".part.json").getContent() == sidecar
    assert net.factory.limits.open == {} and net.reactor.getDelayedCalls() == []

    free[0] = size - held
    d = client.fetch(net.reactor, ADDRESS, "data.bin", local)
    net.run(net.connect())
    assert successResultOf(d).resumedFrom == held
    assert local.getContent() == (root / "data.bin").read_bytes()


def test_freeSpace(tmp_path: Any) -> None:
    """freeSpace reports the filesystem's room for an unprivileged writer, or None."""
    free = partfile.freeSpace(str(tmp_path))
    assert free is not None and free > 0
    assert partfile.freeSpace(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("answer", [[b"LIST \n"], [b"L", b"IST \n"], [b"20", b"0OK\n"]])
def test_answerThatIsNotTheFileProtocol(answer: list[bytes]) -> None:
    """
    An answer that does not start with a status (an echo server sends the request back)
    fails the request at once, naming it, instead of waiting for the idle timeout.
    """
    from twisted.internet.testing import StringTransport

    from twisted_udpsuite.files.wire import ListDir

    reactor = MemoryReactorClock()
    protocol = clientprotocol.FileClientProtocol(reactor)
    transport = StringTransport()
    transport.abortConnection = lambda: protocol.connectionLost()  # type: ignore[method-assign]
    protocol.makeConnection(transport)
    d = protocol.request(ListDir(""), clientprotocol.ResponseSink())
    for data in answer:
        if not d.called:  # an aborted connection delivers nothing more
            protocol.dataReceived(data)
    error = failureResultOf(d, client.FetchError).value
    assert str(error).startswith("not a udpsuite file server: it answered b'")
    assert reactor.getDelayedCalls() == []


def test_fetchToAWriter() -> None:
    """fetchTo streams the file to any writer and checks its sha256; no part file."""
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as served:
        data = os.urandom(200_000)
        with open(os.path.join(served, "data.bin"), "wb") as f:
            f.write(data)
        net = Net(served)
        output = io.BytesIO()
        d = client.fetchTo(net.reactor, ADDRESS, "data.bin", output)
        net.run(net.connect())
        result = successResultOf(d)
        assert output.getvalue() == data and result.path is None
        assert result.size == result.received == len(data)
        assert sorted(os.listdir(served)) == ["data.bin"]
