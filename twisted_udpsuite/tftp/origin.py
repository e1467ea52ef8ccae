# -*- test-case-name: tests.tftp.test_pxe_origin -*-
"""
Files from an HTTP(S) origin instead of a directory (C{--origin URL}), with an optional
local cache (C{--cache DIR --cache-size BYTES}): how a fleet of boot servers shares one
store (nginx, or an S3-compatible bucket behind a URL).

L{HTTPOriginBackend} is an L{IBackend}. A request's name is checked by the same rules as a
directory's (L{requestSegments}: backslashes separate, no C{..}) and appended, segment by
segment URL-quoted, to the base URL. The answer is streamed with treq (Twisted's HTTP
client): the TFTP transfer pulls blocks from L{OriginReader}, which holds at most
L{HIGH_WATER} bytes and pauses the HTTP connection beyond that (backpressure), so a slow
client never makes the server hold a whole image. C{tsize} is the C{Content-Length}.

  - 404 or 410 from the origin is ERROR 1 (file not found), 401 or 403 ERROR 2;
  - any other status, or no answer, is ERROR 0 "Origin failed", with the origin's
    status logged as a warning;
  - a body that ends early (the origin went away) ends the transfer with ERROR 0.

With an L{OriginCache}, a file is fetched once and served from disk after that: for
C{freshFor} seconds with no request at all, then revalidated with a conditional request
(C{If-None-Match} with its C{ETag}, C{If-Modified-Since} with its C{Last-Modified}); a 304
keeps the copy, a 200 replaces it. If the origin cannot be reached (or fails with a 5xx)
while a copy exists, the copy is served and a warning logged: booting from a copy that may
be stale beats not booting. A file is cached while it is first sent: written to a
temporary file and published (renamed) only once the whole body has arrived, with its
length checked, so an interrupted fetch never leaves a corrupt entry; a TFTP client that
stops early (a PXE ROM's C{tsize} probe) does not stop the fetch into the cache. The cache
is bounded by C{maxBytes}, least recently used entries going first, and can be shared by
several processes (C{--workers}): its state is the directory itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import implementer

from twisted_udpsuite.paths import (
    AtomicFileWriter,
    UnsafePath,
    findStaleTemporaryFiles,
    isTemporaryName,
    requestSegments,
)
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.tftp.backend import FileReader, IBackend, IReader, IWriter, Peer
from twisted_udpsuite.tftp.errors import AccessViolation, FileNotFound, TFTPError
from twisted_udpsuite.twistedprivate import isResponseDone

if TYPE_CHECKING:
    from treq.client import HTTPClient

__all__ = [
    "HIGH_WATER",
    "CacheEntry",
    "HTTPOriginBackend",
    "OriginCache",
    "OriginReader",
    "originBase",
]

HIGH_WATER = 256 * 1024
"""Bytes an L{OriginReader} holds before it pauses the HTTP connection."""
_LOW_WATER = HIGH_WATER // 4
_META = ".json"

log = Logger(namespace="twisted_udpsuite.tftp.origin")


def originBase(url: str) -> str:
    """C{url} as a base for names (with a final C{/}), or ValueError if not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    return url if url.endswith("/") else url + "/"


@dataclass
class CacheEntry:
    """A cached file: its data file and what revalidates it."""

    key: str
    url: str
    size: int
    etag: str | None
    lastModified: str | None
    checked: float  # when the origin last confirmed it (clock seconds)


class CacheFill:
    """One file being written into the cache; published by L{commit} only."""

    def __init__(self, cache: OriginCache, url: str, expected: int | None) -> None:
        self._cache = cache
        self.url = url
        self.expected = expected
        self._writer: AtomicFileWriter | None = AtomicFileWriter(
            cache.dataPath(cache.keyOf(url)), overwrite=True
        )

    def write(self, data: bytes) -> None:
        """Append C{data}; a failing disk ends the fill (the transfer goes on)."""
        writer = self._writer
        if writer is None:
            return
        if writer.bytesWritten + len(data) > self._cache.maxBytes:
            log.info("not caching {url}: larger than the cache", url=self.url)
            self.abort()
            return
        try:
            writer.write(data)
        except OSError as e:
            log.warn("not caching {url}: {error}", url=self.url, error=e)
            self._writer = None  # write() removed the temporary file

    def commit(self, etag: str | None, lastModified: str | None) -> None:
        """The whole body arrived: publish it, if its length is the announced one."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self.expected is not None and writer.bytesWritten != self.expected:
            writer.abort()
            return
        self._cache.publish(self.url, writer, etag, lastModified)

    def abort(self) -> None:
        """The body did not arrive whole: no entry (an older one stays)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()


class OriginCache:
    """
    The files of an origin on local disk: C{<sha256 of the URL>} holds the data and
    C{<sha256>.json} what revalidates it; the last-use time is the JSON file's mtime.

    @param maxBytes: Total size of the cached data; least recently used entries go first.
    @param freshFor: Seconds after a fetch or revalidation during which a copy is served
        without asking the origin.
    """

    def __init__(
        self,
        directory: FilePath[str],
        maxBytes: int,
        *,
        freshFor: float = 60.0,
        clock: IReactorTime | None = None,
    ) -> None:
        if maxBytes <= 0:
            raise ValueError("maxBytes must be positive")
        self.directory = directory.asTextMode()
        self.maxBytes = maxBytes
        self.freshFor = freshFor
        self._clock = reactorOr(clock)

    def cleanStaleUploads(self) -> list[FilePath[str]]:
        """At start: remove the temporary files of fills a crash interrupted."""
        stale = findStaleTemporaryFiles(self.directory)
        for path in stale:
            try:
                path.remove()
            except OSError:
                continue
        if stale:
            log.warn(
                "removed {count} unfinished cache files in {directory}",
                count=len(stale),
                directory=self.directory.path,
            )
        return stale

    @staticmethod
    def keyOf(url: str) -> str:
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    def dataPath(self, key: str) -> FilePath[str]:
        return self.directory.child(key)

    def _metaPath(self, key: str) -> FilePath[str]:
        return self.directory.child(key + _META)

    def lookup(self, url: str) -> CacheEntry | None:
        """The entry for C{url}, if its data and description are both there and agree."""
        key = self.keyOf(url)
        try:
            meta = json.loads(self._metaPath(key).getContent())
            size = os.stat(self.dataPath(key).path).st_size
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url or meta.get("size") != size:
            return None
        return CacheEntry(
            key, url, size, meta.get("etag"), meta.get("lastModified"), meta.get("checked", 0)
        )

    def isFresh(self, entry: CacheEntry) -> bool:
        return self._clock.seconds() - entry.checked < self.freshFor

    def open(self, entry: CacheEntry) -> FileReader:
        """A reader of the cached data; marks the entry as just used."""
        path = self.dataPath(entry.key).path
        try:
            os.utime(self._metaPath(entry.key).path)
        except OSError:
            pass
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            return FileReader(fd, size)
        except BaseException:
            os.close(fd)
            raise

    def revalidated(self, entry: CacheEntry) -> None:
        """The origin confirmed the copy (304): fresh for another C{freshFor} seconds."""
        entry.checked = self._clock.seconds()
        self._writeMeta(entry)

    def forget(self, url: str) -> None:
        """The origin no longer has C{url}: drop the copy."""
        key = self.keyOf(url)
        for path in (self._metaPath(key), self.dataPath(key)):
            try:
                path.remove()
            except OSError:
                pass

    def startFill(self, url: str, expected: int | None) -> CacheFill | None:
        """A fill for C{url}'s body, or None if it cannot be cached (too large, no room)."""
        if expected is not None and expected > self.maxBytes:
            return None
        try:
            self.directory.makedirs(ignoreExistingDirectory=True)
            return CacheFill(self, url, expected)
        except OSError as e:
            log.warn("not caching {url}: {error}", url=url, error=e)
            return None

    def publish(
        self, url: str, writer: AtomicFileWriter, etag: str | None, lastModified: str | None
    ) -> None:
        """
        Replace the entry of C{url} by the finished C{writer}: its description goes first
        (so a crash between leaves data without one, a miss, never a wrong pair), then the
        data is renamed into place and described, then old entries are evicted.
        """
        key = self.keyOf(url)
        try:
            self._metaPath(key).remove()
        except OSError:
            pass
        try:
            writer.commit()
        except OSError as e:
            log.warn("not caching {url}: {error}", url=url, error=e)
            return
        entry = CacheEntry(key, url, writer.bytesWritten, etag, lastModified, self._clock.seconds())
        self._writeMeta(entry)
        log.info("cached {url} ({bytes} bytes)", url=url, bytes=entry.size)
        self.evict()

    def _writeMeta(self, entry: CacheEntry) -> None:
        meta = {
            "url": entry.url,
            "size": entry.size,
            "etag": entry.etag,
            "lastModified": entry.lastModified,
            "checked": entry.checked,
        }
        try:
            self._metaPath(entry.key).setContent(json.dumps(meta).encode("utf-8"))
        except OSError as e:
            log.warn("cannot describe the cached {url}: {error}", url=entry.url, error=e)

    def evict(self) -> None:
        """Remove least recently used entries until the data fits in C{maxBytes}."""
        entries = []
        total = 0
        try:
            names = os.listdir(self.directory.path)
        except OSError:
            return
        for name in names:
            if not name.endswith(_META) or isTemporaryName(name):
                continue
            key = name[: -len(_META)]
            try:
                used = os.stat(self._metaPath(key).path).st_mtime
                data = os.stat(self.dataPath(key).path)
            except OSError:
                continue
            if stat.S_ISREG(data.st_mode):
                entries.append((used, key, data.st_size))
                total += data.st_size
        for _, key, size in sorted(entries):
            if total <= self.maxBytes:
                break
            for path in (self._metaPath(key), self.dataPath(key)):
                try:
                    path.remove()
                except OSError:
                    pass
            total -= size
            log.debug("evicted {key} ({bytes} bytes) from the cache", key=key, bytes=size)


@implementer(IReader)
class OriginReader(Protocol):
    """
    An HTTP response body as an L{IReader}: the transfer pulls blocks with L{read}; the
    connection is paused while L{HIGH_WATER} bytes wait, resumed below a quarter of it.
    A fill, if given, gets every byte and is committed only when the body ends whole.

    @ivar size: The C{Content-Length}, or None.
    """

    def __init__(
        self,
        response: IResponse,
        url: str,
        fill: CacheFill | None,
        *,
        clock: IReactorTime,
        idleTimeout: float,
    ) -> None:
        self.size = _length(response)
        self.url = url
        self._fill = fill
        self._etag = _header(response, b"etag")
        self._lastModified = _header(response, b"last-modified")
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._idle: IDelayedCall | None = None
        self._buffer = bytearray()
        self._waiting: tuple[Deferred[bytes], int] | None = None
        self._received = 0
        self._ended = False
        self._error: TFTPError | None = None
        self._closed = False
        self._paused = False
        response.deliverBody(self)  # type: ignore[no-untyped-call]  # (unannotated)

    @property
    def _producer(self) -> IPushProducer:
        """The body's transport, which pauses, resumes and stops the origin's response."""
        return cast(IPushProducer, self.transport)

    def connectionMade(self) -> None:
        self._armIdle()

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        self._armIdle()
        if self._fill is not None:
            self._fill.write(data)
        if self._closed:
            return
        self._buffer += data
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            d, n = waiting
            d.callback(self._take(n))
        if len(self._buffer) >= HIGH_WATER and not self._paused:
            self._paused = True
            self._disarmIdle()  # our pause: the origin is not the one idling
            self._producer.pauseProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._ended = True
        self._disarmIdle()
        error = reason.value if reason is not None else None
        whole = isResponseDone(error)
        if isinstance(error, PotentialDataLoss) and self.size is None:
            whole = True  # no length announced: the end of the connection is the end
        if whole and self.size is not None and self._received != self.size:
            whole = False
        fill, self._fill = self._fill, None
        if whole:
            if fill is not None:
                fill.commit(self._etag, self._lastModified)
        else:
            if fill is not None:
                fill.abort()
            if self._error is None:
                self._error = TFTPError(
                    f"Origin failed after {self._received} of {self.size or '?'} bytes"
                )
            log.warn(
                "origin {url} ended the body early ({received} of {size} bytes): {why}",
                url=self.url,
                received=self._received,
                size=self.size,
                why=reason.getErrorMessage() if reason is not None else self._error,
            )
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            d, n = waiting
            if self._error is not None:
                d.errback(self._error)
            else:
                d.callback(self._take(n))

    def read(self, n: int) -> bytes | Deferred[bytes]:
        """Up to C{n} bytes; a Deferred while none have arrived; C{b""} at the end."""
        if self._buffer:
            return self._take(n)
        if self._error is not None:
            raise self._error
        if self._ended:
            return b""
        d: Deferred[bytes] = Deferred()
        self._waiting = (d, n)
        return d

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._paused and len(self._buffer) < _LOW_WATER and not self._ended:
            self._paused = False
            self._armIdle()
            self._producer.resumeProducing()
        return chunk

    def _armIdle(self) -> None:
        if self._ended:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._idleTimeout)
        else:
            self._idle = self._clock.callLater(self._idleTimeout, self._stalled)

    def _disarmIdle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and idle.active():
            idle.cancel()

    def _stalled(self) -> None:
        self._idle = None
        self._error = TFTPError(f"Origin sent nothing for {self._idleTimeout:g} s")
        self._producer.stopProducing()  # connectionLost follows

    def close(self) -> None:
        """
        The transfer is over. A fill goes on reading the body into the cache (a PXE ROM
        that only wanted the size then finds the file cached); otherwise the download stops.
        """
        self._closed = True
        self._buffer.clear()
        self._waiting = None  # the transfer that waited is over
        if self._ended:
            return
        if self._fill is not None:
            if self._paused:
                self._paused = False
                self._armIdle()
                self._producer.resumeProducing()
            return
        self._disarmIdle()
        self._producer.stopProducing()


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[-1].decode("latin-1") if values else None


class _Discard(Protocol):
    """Reads (and drops) a body we do not want: the connection is then reusable."""

    def __init__(self, response: IResponse) -> None:
        response.deliverBody(self)  # type: ignore[no-untyped-call]  # (unannotated)

    def dataReceived(self, data: bytes) -> None:
        pass


@implementer(IBackend)
class HTTPOriginBackend:
    """
    Serve the files under an HTTP(S) base URL (read-only), optionally through a cache.

    @param base: The URL the requested names are appended to (C{http://nginx/boot/}).
    @param client: A treq C{HTTPClient} (by default one with a persistent connection pool
        on C{reactor}, made at the first request).
    @param timeout: Seconds to wait for the origin's answer, and for each part of a body.
    """

    root = None  # no directory behind it

    def __init__(
        self,
        base: str,
        *,
        cache: OriginCache | None = None,
        reactor: IReactorNetwork | None = None,
        client: HTTPClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = originBase(base)
        self.cache = cache
        self._reactor = reactorOr(reactor)
        self._client = client
        self.timeout = timeout

    def _http(self) -> HTTPClient:
        """
        The HTTP client, made when first needed: importing treq (and so Twisted's
        endpoints, whose systemd parser takes C{LISTEN_FDS} from the environment as it is
        imported) before the service has adopted its sockets would break socket activation.
        """
        if self._client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            # (HTTPConnectionPool and Agent are unannotated in Twisted)
            pool = HTTPConnectionPool(self._reactor, persistent=True)  # type: ignore[no-untyped-call]
            agent = Agent(self._reactor, pool=pool)  # type: ignore[no-untyped-call]
            self._client = HTTPClient(agent)
        return self._client

    def urlFor(self, name: bytes) -> str:
        """The URL of a requested name, or L{AccessViolation} for an unsafe one."""
        try:
            segments = requestSegments(name, backslashSeparator=True)
        except UnsafePath:
            raise AccessViolation("Access violation") from None
        if not segments:
            raise AccessViolation("Not a file")
        return self.base + "/".join(quote(segment, safe="") for segment in segments)

    def cleanStaleUploads(self) -> list[FilePath[str]]:
        """At start: the cache's leftovers of a crash (see L{OriginCache.cleanStaleUploads})."""
        return self.cache.cleanStaleUploads() if self.cache is not None else []

    def openRead(self, name: bytes, peer: Peer) -> Deferred[IReader]:
        """The file from the cache (fresh), or from the origin (revalidating a copy)."""
        url = self.urlFor(name)
        cache = self.cache
        entry = cache.lookup(url) if cache is not None else None
        headers: dict[bytes | str, list[bytes | str]] = {}
        if entry is not None:
            if cache.isFresh(entry):  # type: ignore[union-attr]
                return succeed(cache.open(entry))  # type: ignore[union-attr]
            if entry.etag:
                headers[b"If-None-Match"] = [entry.etag.encode("latin-1")]
            if entry.lastModified:
                headers[b"If-Modified-Since"] = [entry.lastModified.encode("latin-1")]
        d = self._http().get(url, headers=headers, unbuffered=True, timeout=self.timeout)
        return d.addCallbacks(
            self._answered, self._failed, callbackArgs=(url, entry), errbackArgs=(url, entry)
        )

    def _answered(self, response: IResponse, url: str, entry: CacheEntry | None) -> IReader:
        code = response.code
        cache = self.cache
        if code == 200:
            fill = cache.startFill(url, _length(response)) if cache is not None else None
            return OriginReader(response, url, fill, clock=self._reactor, idleTimeout=self.timeout)
        _Discard(response)
        if code == 304 and entry is not None and cache is not None:
            cache.revalidated(entry)
            return cache.open(entry)
        if code in (404, 410):
            if cache is not None:
                cache.forget(url)
            log.info("origin has no {url} ({code})", url=url, code=code)
            raise FileNotFound("File not found")
        if code in (401, 403):
            log.warn("origin refuses {url} ({code})", url=url, code=code)
            raise AccessViolation("Access violation")
        phrase = response.phrase.decode("latin-1", "replace")
        if entry is not None and cache is not None and code >= 500:
            log.warn(
                "origin answered {code} {phrase} for {url}: serving the cached copy",
                code=code,
                phrase=phrase,
                url=url,
            )
            return cache.open(entry)
        log.warn(
            "origin answered {code} {phrase} for {url}",
            code=code,
            phrase=phrase,
            url=url,
            originStatus=code,
        )
        raise TFTPError(f"Origin failed ({code})")

    def _failed(self, failure: Failure, url: str, entry: CacheEntry | None) -> IReader:
        if entry is not None and self.cache is not None:
            log.warn(
                "origin unreachable for {url} ({error}): serving the cached copy",
                url=url,
                error=failure.getErrorMessage(),
            )
            return self.cache.open(entry)
        log.warn("origin unreachable for {url}: {error}", url=url, error=failure.getErrorMessage())
        raise TFTPError("Origin unreachable")

    def openWrite(self, name: bytes, peer: Peer, size: int | None) -> IWriter:
        raise AccessViolation("Uploads are disabled")


def _length(response: IResponse) -> int | None:
    length = response.length
    return length if isinstance(length, int) else None
