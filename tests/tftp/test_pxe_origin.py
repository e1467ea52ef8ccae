"""
Files from an HTTP origin with a local cache (#18 §3): L{twisted_udpsuite.tftp.origin} in
memory (a scripted HTTP client and a Clock: backpressure, errors, the cache's freshness,
revalidation, LRU and atomic fills), through the TFTP server on the in-memory network, and
against a real nginx on 127.0.0.1 (in L{tests.tftp.test_pxe_nginx}).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionAborted, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface.verify import verifyObject

from tests.helpers import failureResultOf, successResultOf
from tests.tftp.test_pxe_deploy import _parse
from tests.tftp.test_server import _World
from twisted_udpsuite.paths import isTemporaryName
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.backend import IBackend, IReader
from twisted_udpsuite.tftp.origin import (
    HIGH_WATER,
    HTTPOriginBackend,
    OriginCache,
    originBase,
)

BASE = "http://origin.example/boot/"


class FakeConnection:
    """What a body protocol gets as its transport: pausable, stoppable."""

    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.paused = False
        self.pauses = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        if self.response.auto:
            self.response.push()

    def stopProducing(self) -> None:
        self.stopped = True
        self.response.fail(ConnectionAborted())


class FakeResponse:
    """
    An HTTP response (the part of IResponse the origin uses). With C{auto}, the body is
    pushed in 64 KiB chunks whenever the connection is not paused, then ended.
    """

    phrase = b"OK"

    def __init__(
        self, code: int, body: bytes = b"", *, headers: dict[str, str] | None = None, **kw: Any
    ) -> None:
        self.code = code
        self.body = body
        self.length = kw.get("length", len(body) if code == 200 else UNKNOWN_LENGTH)
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        self.auto = kw.get("auto", True)
        self.sent = 0
        self.protocol: Any = None
        self.connection = FakeConnection(self)
        self.ended = False

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.connection)
        if self.auto:
            self.push()

    def push(self, upTo: int | None = None) -> None:
        """Send the body (up to byte C{upTo}) while not paused; end it when all is sent."""
        end = len(self.body) if upTo is None else upTo
        while self.sent < end and not self.connection.paused and not self.ended:
            chunk = self.body[self.sent : min(end, self.sent + 65536)]
            self.sent += len(chunk)
            self.protocol.dataReceived(chunk)
        if self.sent == len(self.body) and upTo is None and not self.ended:
            self.ended = True
            self.protocol.connectionLost(Failure(ResponseDone()))

    def fail(self, reason: Exception) -> None:
        if not self.ended:
            self.ended = True
            self.protocol.connectionLost(Failure(ResponseFailed([Failure(reason)])))


class FakeClient:
    """A treq HTTPClient stand-in: answers each GET by the script for its URL."""

    def __init__(self) -> None:
        self.script: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, dict[bytes, list[bytes]]]] = []

    def answer(self, name: str, *responses: Any) -> None:
        self.script.setdefault(BASE + name, []).extend(responses)

    def get(self, url: str, headers: Any = None, **kw: Any) -> Deferred[Any]:
        assert kw == {"unbuffered": True, "timeout": 30.0}
        self.requests.append((url, dict(headers or {})))
        response = self.script[url].pop(0)
        if isinstance(response, Exception):
            return fail(response)
        return succeed(response)


def _readAll(reader: Any) -> bytes:
    out = bytearray()
    while True:
        chunk = reader.read(1432)
        if isinstance(chunk, Deferred):
            chunk = successResultOf(chunk)
        if not chunk:
            reader.close()
            return bytes(out)
        out += chunk


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def http() -> FakeClient:
    return FakeClient()


@pytest.fixture
def cacheDir(tmp_path: Any) -> FilePath:
    return FilePath(str(tmp_path)).child("cache")


def _origin(http: FakeClient, clock: Clock, cache: OriginCache | None = None) -> Any:
    return HTTPOriginBackend(BASE, cache=cache, reactor=clock, client=http)


def _leftovers(directory: FilePath) -> list[str]:
    return sorted(os.listdir(directory.path)) if directory.exists() else []


def test_namesBecomeURLs(http: FakeClient, clock: Clock) -> None:
    """Names checked as paths are (backslashes too), then URL-quoted segment by segment."""
    origin = _origin(http, clock)
    assert verifyObject(IBackend, origin)
    assert origin.urlFor(b"\\pxelinux.cfg\\01-aa") == BASE + "pxelinux.cfg/01-aa"
    assert origin.urlFor("a b/ü?#%".encode()) == BASE + "a%20b/%C3%BC%3F%23%25"
    for unsafe in (b"../etc/passwd", b"a/../../b", b"C:\\x", b"", b"/", b"a\x00b"):
        with pytest.raises(errors.AccessViolation):
            origin.urlFor(unsafe)
    assert originBase("https://s3.example/bucket") == "https://s3.example/bucket/"
    for bad in ("ftp://x/", "/srv/tftp", "http://"):
        with pytest.raises(ValueError):
            originBase(bad)
    with pytest.raises(errors.AccessViolation):
        origin.openWrite(b"x", ("192.0.2.1", 1), None)


def test_streamedWithBackpressure(http: FakeClient, clock: Clock) -> None:
    """
    The body streams through: the size is the Content-Length, the connection is paused
    once HIGH_WATER bytes wait and resumed as the transfer reads, and every byte arrives
    in order; no timer is left.
    """
    body = os.urandom(3 * HIGH_WATER + 123)
    response = FakeResponse(200, body)
    http.answer("nbp.0", response)
    reader = successResultOf(_origin(http, clock).openRead(b"nbp.0", ("192.0.2.9", 1)))
    assert verifyObject(IReader, reader)
    assert reader.size == len(body)
    assert response.connection.paused and response.sent == HIGH_WATER
    assert _readAll(reader) == body
    assert response.connection.pauses >= 3
    assert clock.getDelayedCalls() == []


def test_readWaitsForTheOrigin(http: FakeClient, clock: Clock) -> None:
    """A read before any byte is there is a Deferred that fires when bytes come."""
    response = FakeResponse(200, b"x" * 5000, auto=False)
    http.answer("f", response)
    reader = successResultOf(_origin(http, clock).openRead(b"f", ("192.0.2.9", 1)))
    pending = reader.read(1432)
    assert isinstance(pending, Deferred) and not pending.called
    response.push(1000)
    assert successResultOf(pending) == b"x" * 1000
    response.push()
    assert _readAll(reader) == b"x" * 4000


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (404, errors.FileNotFound, "File not found"),
        (410, errors.FileNotFound, "File not found"),
        (403, errors.AccessViolation, "Access violation"),
        (500, errors.TFTPError, "Origin failed (500)"),
        (302, errors.TFTPError, "Origin failed (302)"),
    ],
)
def test_originAnswers(
    http: FakeClient, clock: Clock, code: int, error: type, message: str
) -> None:
    """Missing is ERROR 1, forbidden ERROR 2, anything else ERROR 0 with the status logged."""
    http.answer("f", FakeResponse(code))
    with capturedLogs() as events:
        failure = failureResultOf(_origin(http, clock).openRead(b"f", ("192.0.2.9", 1)))
    assert type(failure.value) is error and failure.value.message == message
    assert failure.value.code == error.code
    if error is errors.TFTPError:
        (event,) = [e for e in events if e.get("originStatus")]
        assert event["originStatus"] == code and event["log_level"].name == "warn"


def test_originUnreachable(http: FakeClient, clock: Clock) -> None:
    http.answer("f", ConnectionRefusedError())
    failure = failureResultOf(_origin(http, clock).openRead(b"f", ("192.0.2.9", 1)))
    assert failure.value.message == "Origin unreachable" and failure.value.code == 0


def test_originGoesAwayMidBody(http: FakeClient, clock: Clock, cacheDir: FilePath) -> None:
    """
    The body breaks off: the waiting read fails with a TFTP error (ERROR 0 for the
    client), and the cache has no entry, not even a temporary file.
    """
    response = FakeResponse(200, os.urandom(100_000), auto=False)
    http.answer("f", response)
    cache = OriginCache(cacheDir, 10**6, clock=clock)
    reader = successResultOf(_origin(http, clock, cache).openRead(b"f", ("192.0.2.9", 1)))
    response.push(30_000)
    assert len(reader.read(65536)) == 30_000
    pending = reader.read(1432)
    response.fail(ConnectionAborted())
    error = failureResultOf(pending).value
    assert isinstance(error, errors.TFTPError)
    assert error.message == "Origin failed after 30000 of 100000 bytes"
    reader.close()
    assert _leftovers(cacheDir) == []
    assert cache.lookup(BASE + "f") is None


def test_shortBodyIsNotCached(http: FakeClient, clock: Clock, cacheDir: FilePath) -> None:
    """A body that ends cleanly but short of its Content-Length is a failure too."""
    http.answer("f", FakeResponse(200, b"x" * 100, length=200))
    cache = OriginCache(cacheDir, 10**6, clock=clock)
    reader = successResultOf(_origin(http, clock, cache).openRead(b"f", ("192.0.2.9", 1)))
    assert reader.read(1000) == b"x" * 100
    with pytest.raises(errors.TFTPError, match="after 100 of 200 bytes"):
        reader.read(1000)
    assert _leftovers(cacheDir) == []


def test_stalledOriginTimesOut(http: FakeClient, clock: Clock) -> None:
    """No byte for the timeout while the transfer waits: the download is stopped."""
    response = FakeResponse(200, b"x" * 5000, auto=False)
    http.answer("f", response)
    reader = successResultOf(_origin(http, clock).openRead(b"f", ("192.0.2.9", 1)))
    pending = reader.read(1432)
    clock.advance(29)
    response.push(10)  # a byte resets the wait
    assert successResultOf(pending) == b"x" * 10
    pending = reader.read(1432)
    clock.advance(30)
    assert failureResultOf(pending).value.message == "Origin sent nothing for 30 s"
    assert response.connection.stopped
    assert clock.getDelayedCalls() == []


def test_closingEarlyStopsTheDownload(http: FakeClient, clock: Clock) -> None:
    """Without a cache, a transfer that ends early stops the HTTP download."""
    response = FakeResponse(200, os.urandom(3 * HIGH_WATER))
    http.answer("f", response)
    reader = successResultOf(_origin(http, clock).openRead(b"f", ("192.0.2.9", 1)))
    reader.read(1432)
    reader.close()
    assert response.connection.stopped
    assert clock.getDelayedCalls() == []


def test_cacheFetchesOnceThenServesFromDisk(
    http: FakeClient, clock: Clock, cacheDir: FilePath
) -> None:
    """
    The first read fills the cache; within freshFor the next ones send no request and
    read from disk; after it, a conditional request: 304 keeps the copy, 200 replaces it.
    """
    cache = OriginCache(cacheDir, 10**6, freshFor=60, clock=clock)
    origin = _origin(http, clock, cache)
    headers = {"ETag": '"v1"', "Last-Modified": "Mon, 30 Nov 2026 10:00:00 GMT"}
    http.answer("k", FakeResponse(200, b"one" * 1000, headers=headers))
    peer = ("192.0.2.9", 1)
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"one" * 1000
    clock.advance(59)
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"one" * 1000
    assert len(http.requests) == 1  # a hit sends no request
    clock.advance(2)
    http.answer("k", FakeResponse(304))
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"one" * 1000
    assert http.requests[1][1] == {
        b"If-None-Match": [b'"v1"'],
        b"If-Modified-Since": [b"Mon, 30 Nov 2026 10:00:00 GMT"],
    }
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"one" * 1000
    assert len(http.requests) == 2  # revalidated: fresh again
    clock.advance(61)
    http.answer("k", FakeResponse(200, b"two" * 500, headers={"ETag": '"v2"'}))
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"two" * 500
    assert cache.lookup(BASE + "k").etag == '"v2"'
    assert _readAll(successResultOf(origin.openRead(b"k", peer))) == b"two" * 500
    assert len(http.requests) == 3
    assert [n for n in _leftovers(cacheDir) if isTemporaryName(n)] == []


def test_earlyCloseStillFillsTheCache(http: FakeClient, clock: Clock, cacheDir: FilePath) -> None:
    """A PXE ROM's size probe ends the transfer at once; the fetch goes on into the cache."""
    body = os.urandom(3 * HIGH_WATER)
    response = FakeResponse(200, body)
    http.answer("big", response)
    cache = OriginCache(cacheDir, 10**7, clock=clock)
    origin = _origin(http, clock, cache)
    reader = successResultOf(origin.openRead(b"big", ("192.0.2.9", 1)))
    assert response.connection.paused
    reader.close()
    assert not response.connection.stopped and response.ended
    assert _readAll(successResultOf(origin.openRead(b"big", ("192.0.2.9", 1)))) == body
    assert len(http.requests) == 1
    assert clock.getDelayedCalls() == []


def test_staleCopyServedWhenTheOriginFails(
    http: FakeClient, clock: Clock, cacheDir: FilePath
) -> None:
    """Unreachable, or a 5xx, with a copy: the copy is served and a warning logged."""
    cache = OriginCache(cacheDir, 10**6, freshFor=0, clock=clock)
    origin = _origin(http, clock, cache)
    http.answer("k", FakeResponse(200, b"copy"), ConnectionRefusedError(), FakeResponse(503))
    assert _readAll(successResultOf(origin.openRead(b"k", ("192.0.2.9", 1)))) == b"copy"
    with capturedLogs() as events:
        for _ in range(2):
            reader = successResultOf(origin.openRead(b"k", ("192.0.2.9", 1)))
            assert _readAll(reader) == b"copy"
    assert [e["log_level"].name for e in events] == ["warn", "warn"]
    http.answer("k", FakeResponse(404))
    failureResultOf(origin.openRead(b"k", ("192.0.2.9", 1)), errors.FileNotFound)
    assert cache.lookup(BASE + "k") is None  # gone from the origin: gone from the cache


def test_cacheIsLRUBounded(http: FakeClient, clock: Clock, cacheDir: FilePath) -> None:
    """Past maxBytes, the least recently used entries go; a hit counts as a use."""
    cache = OriginCache(cacheDir, 2500, freshFor=3600, clock=clock)
    origin = _origin(http, clock, cache)
    for name in ("a", "b"):
        http.answer(name, FakeResponse(200, name.encode() * 1000))
        _readAll(successResultOf(origin.openRead(name.encode(), ("192.0.2.9", 1))))
    meta = cacheDir.child(OriginCache.keyOf(BASE + "b") + ".json").path
    os.utime(meta, (1, 1))  # b was used long ago; a hit on a makes it the newest
    _readAll(successResultOf(origin.openRead(b"a", ("192.0.2.9", 1))))
    http.answer("c", FakeResponse(200, b"c" * 1000))
    _readAll(successResultOf(origin.openRead(b"c", ("192.0.2.9", 1))))
    assert cache.lookup(BASE + "b") is None
    assert cache.lookup(BASE + "a") is not None and cache.lookup(BASE + "c") is not None
    http.answer("huge", FakeResponse(200, b"h" * 3000))
    assert len(_readAll(successResultOf(origin.openRead(b"huge", ("192.0.2.9", 1))))) == 3000
    assert cache.lookup(BASE + "huge") is None  # larger than the whole cache: not kept
    assert len(_leftovers(cacheDir)) == 4  # a and c: data and description each


def test_cacheIgnoresWhatItCannotTrust(clock: Clock, cacheDir: FilePath) -> None:
    """Data without a description, a size that differs, another URL's: all misses."""
    cache = OriginCache(cacheDir, 10**6, clock=clock)
    cacheDir.makedirs()
    key = OriginCache.keyOf(BASE + "f")
    cacheDir.child(key).setContent(b"data")
    assert cache.lookup(BASE + "f") is None
    cacheDir.child(key + ".json").setContent(b'{"url": "%s", "size": 5}' % (BASE + "f").encode())
    assert cache.lookup(BASE + "f") is None
    cacheDir.child(key + ".json").setContent(b'{"url": "http://other/", "size": 4}')
    assert cache.lookup(BASE + "f") is None
    cacheDir.child(key + ".json").setContent(b"not json")
    assert cache.lookup(BASE + "f") is None
    with pytest.raises(ValueError):
        OriginCache(cacheDir, 0)


def test_throughTheServer(tmp_path: Any) -> None:
    """A TFTP download in memory, from the origin: whole, with tsize from Content-Length."""
    http = FakeClient()
    body = os.urandom(5 * HIGH_WATER + 7)
    http.answer("pxelinux.0", FakeResponse(200, body))
    root = FilePath(str(tmp_path))
    world = _World(root, backend=None)
    world.protocol.backend = HTTPOriginBackend(BASE, reactor=world.serverHost, client=http)
    got, result = world.get("pxelinux.0", blksize=1428, windowsize=4)
    assert got == body and result.options.tsize == len(body)
    http.answer("missing", FakeResponse(404))
    with pytest.raises(errors.FileNotFound):
        world.get("missing")
    world.settle()


def test_originOptions(tmp_path: Any) -> None:
    """--origin, --cache, --cache-size and --cache-fresh build the backend they describe."""
    cache = tmp_path / "made" / "cache"
    options = _parse(
        "--origin", "https://boot.example/images", "--cache", str(cache),
        "--cache-size", "512M", "--cache-fresh", "5",
    )  # fmt: skip
    backend = options.backend(Clock())
    assert isinstance(backend, HTTPOriginBackend)
    assert backend.base == "https://boot.example/images/"
    assert (backend.cache.maxBytes, backend.cache.freshFor) == (512 << 20, 5)
    assert backend.cache.directory.path == str(cache) and cache.is_dir()
    assert _parse(*options.toArgv()).toArgv() == options.toArgv()
    assert _parse("--origin", "http://o/").backend(Clock()).cache is None
    assert _parse("--cache-size", "2048").get("cache-size") == 2048


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--origin", "ftp://o/"], "--origin: not an http:// or https:// URL"),
        (["--cache", "/tmp/c"], "--cache caches an --origin: give one"),
        (["--origin", "http://o/", "--writable"], "--origin serves no directory: no --writable"),
        (["--origin", "http://o/", "--ignore-case"], "no --ignore-case"),
        (["--cache-size", "lots"], "--cache-size: 'lots' is not a size"),
        (["--cache-size", "0"], "--cache-size: '0' is not a size"),
    ],
)
def test_badOriginOptions(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=re.escape(message)):
        _parse(*argv)


_ACTIVATION_CHECK = """
import os, sys
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
from twisted_udpsuite.tftp.tap import Options
options = Options()
options.parseOptions(["--origin", "http://127.0.0.1:9/"])
options.backend()
assert os.environ.get("LISTEN_PID") == str(os.getpid()), "LISTEN_PID was taken"
assert "twisted.internet.endpoints" not in sys.modules
"""


def test_originLeavesSocketActivationAlone() -> None:
    """
    Twisted's endpoints module takes systemd's LISTEN_FDS from the environment as it is
    imported: building an origin backend must not import it (treq comes at the first
    request), or a socket-activated server would no longer find its sockets.
    """
    done = subprocess.run([sys.executable, "-c", _ACTIVATION_CHECK], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
