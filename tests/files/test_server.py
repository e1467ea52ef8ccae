"""The file server in memory: answers, pipelining, errors, limits, backpressure."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from tests.files.helpers import Reader, connect, pumpBody, serve, sha
from twisted_udpsuite.files import senders
from twisted_udpsuite.files import server as serverModule
from twisted_udpsuite.files.wire import Fetch, ListDir, Stat, encodeRequest


@pytest.fixture
def root(tmp_path: Any) -> Any:
    (tmp_path / "hello.txt").write_bytes(b"hello, world\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_bytes(b"inner")
    (tmp_path / ".x.0123456789ab.part").write_bytes(b"upload in progress")
    return tmp_path


def test_fetchWhole(root: Any) -> None:
    """A FETCH answers head, exactly size bytes, then the sha256 trailer; one log event."""
    clock, factory, proto, tr = serve(root)
    with capturedLogs() as events:
        proto.dataReceived(encodeRequest(Fetch("big.bin")))
        pumpBody(clock, tr)
    data = (root / "big.bin").read_bytes()
    [(head, body, trailer)] = Reader(True).feed(tr.value())
    assert head.status == 200 and head.size == len(data) and head.offset == 0
    assert body == data and trailer is not None and trailer.sha256 == sha(data)
    done = [e for e in events if "bytes" in e and e.get("verb") == "FETCH"]
    assert len(done) == 1
    assert done[0]["bytes"] == len(data) and done[0]["outcome"] == "ok"
    assert done[0]["peer"] == "127.0.0.1:5555" and done[0]["path"] == "big.bin"
    assert not tr.disconnecting


def test_fetchEmpty(root: Any) -> None:
    """An empty file is a zero-size body with the digest of nothing."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("empty")))
    pumpBody(clock, tr)
    [(head, body, trailer)] = Reader(True).feed(tr.value())
    assert head.size == 0 and body == b"" and trailer is not None and trailer.sha256 == sha(b"")


def test_pipelined(root: Any) -> None:
    """Several requests in one segment are answered in order on the same connection."""
    clock, _, proto, tr = serve(root)
    requests = [Stat("hello.txt"), Fetch("hello.txt"), ListDir(""), Fetch("sub/inner.txt")]
    proto.dataReceived(b"".join(encodeRequest(r) for r in requests))
    for _ in range(100):
        clock.advance(0)
    responses = Reader(False, True, False, True).feed(tr.value())
    assert [h.status for h, _, _ in responses] == [200, 200, 200, 200]
    stat, fetched, listing, inner = responses
    assert stat[0].fields["kind"] == "file" and stat[0].fields["length"] == "13"
    assert stat[0].fields["version"] == fetched[0].version
    assert fetched[1] == b"hello, world\n"
    names = [line.split(b'"')[3] for line in listing[1].splitlines()]
    assert names == [b"big.bin", b"empty", b"hello.txt", b"sub"]  # no in-progress upload
    assert inner[1] == b"inner" and inner[2] is not None and inner[2].sha256 == sha(b"inner")


@pytest.mark.parametrize(
    "request_,status",
    [
        (Fetch("missing"), 404),
        (Fetch("../etc/passwd"), 403),
        (Fetch("/sub/../../x"), 403),
        (Fetch("sub"), 409),
        (Fetch("a\x00b"), 403),
        (Fetch("hello.txt", 14), 416),
        (ListDir("hello.txt"), 409),
        (Stat("nope"), 404),
        (Fetch(".x.0123456789ab.part"), 404),  # an upload in progress, as over TFTP/HTTP
    ],
)
def test_errorsKeepConnection(root: Any, request_: Any, status: int) -> None:
    """Refusals are answered with their code and the connection serves the next request."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(request_) + encodeRequest(Stat("hello.txt")))
    clock.advance(0)
    responses = Reader(isinstance(request_, Fetch), False).feed(tr.value())
    assert [h.status for h, _, _ in responses] == [status, 200]
    assert not tr.disconnecting


def test_symlinkOutOfRoot(root: Any, tmp_path_factory: Any) -> None:
    """A symlink leading out of the root is refused, and hidden from listings."""
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_bytes(b"secret")
    (root / "link").symlink_to(outside)
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("link")) + encodeRequest(ListDir("")))
    clock.advance(0)
    (head, _, _), (_, listing, _) = Reader(True, False).feed(tr.value())
    assert head.status == 403 and b"link" not in listing


@pytest.mark.parametrize("line,status", [(b"HELLO there\n", 501), (b"FETCH x y z\n", 400)])
def test_malformedCloses(root: Any, line: bytes, status: int) -> None:
    """A malformed request is answered, after the earlier ones, and the connection closed."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Stat("hello.txt")) + line + encodeRequest(Stat("empty")))
    responses = Reader(False, False).feed(tr.value())
    assert [h.status for h, _, _ in responses] == [200, status]
    assert tr.disconnecting


def test_requestTooLong(root: Any) -> None:
    """An endless request line gets 413 and a close."""
    clock, _, proto, tr = serve(root)
    for _ in range(100):
        if tr.disconnecting:
            break
        proto.dataReceived(b"A" * 100)
    [(head, _, _)] = Reader(False).feed(tr.value())
    assert head.status == 413 and tr.disconnecting


def test_resumeSameVersion(root: Any) -> None:
    """With the current version, the body starts at the offset; the digest covers the file."""
    data = (root / "big.bin").read_bytes()
    for warm in (False, True):
        clock, factory, proto, tr = serve(root)
        if warm:  # a whole read first caches the digest: no prefix read on resume
            proto.dataReceived(encodeRequest(Fetch("big.bin")))
            pumpBody(clock, tr)
            assert factory.digestFor(Reader(True).feed(tr.value())[0][0].version or "")
            tr.clear()
        proto.dataReceived(encodeRequest(Stat("big.bin")))
        version = Reader(False).feed(tr.value())[0][0].version
        tr.clear()
        proto.dataReceived(encodeRequest(Fetch("big.bin", 1000000, version)))
        pumpBody(clock, tr)
        [(head, body, trailer)] = Reader(True).feed(tr.value())
        assert head.offset == 1000000 and head.size == len(data) - 1000000
        assert body == data[1000000:] and trailer is not None and trailer.sha256 == sha(data)


def test_resumeOtherVersionRestarts(root: Any) -> None:
    """A resume naming another version gets the whole file from 0."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("hello.txt", 5, "deadbeef")))
    pumpBody(clock, tr)
    [(head, body, _)] = Reader(True).feed(tr.value())
    assert head.offset == 0 and body == b"hello, world\n"


def test_changedWhileSent(root: Any) -> None:
    """A file rewritten in place while being sent ends with a 'changed' trailer."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("big.bin")))  # opened; the body has not started
    with open(root / "big.bin", "r+b") as f:
        f.write(b"X" * 10)
    os.utime(root / "big.bin", ns=(1, 1))
    pumpBody(clock, tr)
    [(_, _, trailer)] = Reader(True).feed(tr.value())
    assert trailer is not None and trailer.changed


def test_shrunkWhileSent(root: Any) -> None:
    """A file truncated under the server cannot be framed: the connection is aborted."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("big.bin")))
    os.truncate(root / "big.bin", 1000)
    pumpBody(clock, tr)
    assert tr.disconnected


class PacedTransport(StringTransport):
    """A consumer with a small buffer that a reader drains only when told."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.buffered = 0
        self.maxBuffered = 0
        self.drained = 0

    def write(self, data: bytes) -> None:
        self.buffered += len(data)
        self.maxBuffered = max(self.maxBuffered, self.buffered)
        if self.producer is not None and self.streaming and self.buffered > self.limit:
            if self.producerState == "producing":
                self.producer.pauseProducing()
                self.producerState = "paused"

    def drain(self) -> None:
        self.drained += self.buffered
        self.buffered = 0
        if self.producer is not None and self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()


def test_pausedConsumerMemoryFlat(root: Any) -> None:
    """A reader that stops reading stops the server: buffered bytes stay bounded."""
    size = 32 * 1024 * 1024
    with open(root / "huge.bin", "wb") as f:
        f.truncate(size)
    clock, factory, _, _ = serve(root)
    proto = factory.buildProtocol(None)
    tr = PacedTransport(64 * 1024)
    proto.makeConnection(tr)
    proto.dataReceived(encodeRequest(Fetch("huge.bin")))
    verifyObject(IPushProducer, tr.producer)
    for _ in range(50):  # nobody reads: nothing more is produced
        clock.advance(0)
    stalled = tr.buffered
    assert stalled <= 64 * 1024 + senders.CHUNK + 4096
    while tr.producer is not None:
        tr.drain()
        clock.advance(0)
    tr.drain()
    assert tr.maxBuffered <= 64 * 1024 + senders.CHUNK + 4096
    assert tr.drained > size


def test_stalledReaderAborted(root: Any) -> None:
    """A reader stalled for the idle timeout loses its connection (it holds a slot)."""
    clock, factory, _, _ = serve(root, idleTimeout=5)
    proto = factory.buildProtocol(None)
    tr = PacedTransport(1024)
    proto.makeConnection(tr)
    proto.dataReceived(encodeRequest(Fetch("big.bin")))
    clock.advance(0)
    clock.advance(6)
    assert tr.disconnected


def test_clientGoneMidBody(root: Any) -> None:
    """The client disconnecting mid-body stops the sender and is logged as such."""
    clock, factory, proto, tr = serve(root)
    with capturedLogs() as events:
        proto.dataReceived(encodeRequest(Fetch("big.bin")))
        proto.connectionLost(None)  # type: ignore[arg-type]
    assert [e["outcome"] for e in events if "outcome" in e] == ["client disconnected"]
    assert factory.limits.open == {}
    assert clock.getDelayedCalls() == []


def test_limits(root: Any) -> None:
    """Over the per-host limit: 429; over the total: 503; both close at once."""
    clock, factory, _, _ = serve(root, maxConnections=3, maxPerHost=2)
    _, tr2 = connect(factory)
    _, tr3 = connect(factory)  # third from the same host
    assert Reader(False).feed(tr3.value())[0][0].status == 429 and tr3.disconnecting
    assert not tr2.disconnecting
    _, tr4 = connect(factory, "10.0.0.2")
    assert not tr4.disconnecting
    _, tr5 = connect(factory, "10.0.0.3")
    assert Reader(False).feed(tr5.value())[0][0].status == 503 and tr5.disconnecting


def test_headerTimeout(root: Any) -> None:
    """A request line left unfinished gets 408 and a close (slowloris)."""
    clock, _, proto, tr = serve(root, headerTimeout=2, idleTimeout=100)
    proto.dataReceived(b"FETCH 0 - hel")
    clock.advance(1)
    proto.dataReceived(b"l")  # trickling does not extend the deadline
    clock.advance(1.5)
    [(head, _, _)] = Reader(False).feed(tr.value())
    assert head.status == 408 and tr.disconnecting


def test_idleTimeout(root: Any) -> None:
    """A connection idle for idleTimeout is told 408 and closed; timers are cleaned up."""
    clock, factory, proto, tr = serve(root, idleTimeout=3)
    proto.dataReceived(encodeRequest(Stat("hello.txt")))
    clock.advance(2)
    assert not tr.disconnecting
    clock.advance(2)
    assert tr.disconnecting
    proto.connectionLost(None)  # type: ignore[arg-type]
    assert clock.getDelayedCalls() == [] and factory.limits.open == {}


def test_pipelineBounded(root: Any) -> None:
    """A flood of pipelined requests stops reading from the client until answered."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("big.bin")))
    proto.dataReceived(encodeRequest(Stat("hello.txt")) * (serverModule.MAX_PIPELINE + 5))
    assert tr.producerState == "paused"
    pumpBody(clock, tr)
    for _ in range(10):
        clock.advance(0)
    assert tr.producerState == "producing"


def test_halfClose(root: Any) -> None:
    """A client that half-closes after its requests gets every answer, then a close."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("big.bin")) + encodeRequest(Stat("empty")))
    proto.readConnectionLost()
    assert not tr.disconnecting
    pumpBody(clock, tr)
    clock.advance(0)
    responses = Reader(True, False).feed(tr.value())
    assert [h.status for h, _, _ in responses] == [200, 200] and tr.disconnecting


def test_hashBacklogPausesSender(root: Any) -> None:
    """When the sha256 worker falls behind, the sender waits for it, then goes on."""
    clock, _, proto, tr = serve(root)
    proto.dataReceived(encodeRequest(Fetch("big.bin")))
    sender = proto._sender  # type: ignore[attr-defined]
    sender._backlog(True)
    for _ in range(20):
        clock.advance(0)
    assert tr.value().count(b"\n\n") == 1 and len(tr.value()) < 1024  # only the head
    sender._backlog(False)
    pumpBody(clock, tr)
    [(_, body, trailer)] = Reader(True).feed(tr.value())
    assert body == (root / "big.bin").read_bytes() and trailer is not None
