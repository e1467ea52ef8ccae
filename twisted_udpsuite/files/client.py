"""
The file server's client: C{fetch}, C{fetchTo}, C{listDirectory} and C{stat}.

L{fetch} downloads into C{LOCAL.part} next to the destination, with a sidecar
C{LOCAL.part.json} recording the remote path and file version
(L{twisted_udpsuite.files.partfile}).  On success it checks the size and the sha256 of
the whole file and renames the part over C{LOCAL}.  On a lost connection or a cancel
the part and sidecar stay, and the next L{fetch} of the same remote path resumes from
them if the server still has the same version (else it restarts from 0: the server
decides, from the version the client sends).  A digest mismatch or a refused request
removes them.

Each call makes its own connection (L{twisted_udpsuite.files.clientprotocol.connect}).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from twisted_udpsuite.files.clientprotocol import FileClientProtocol, ResponseSink, connect
from twisted_udpsuite.files.errors import (
    DigestMismatch,
    FetchError,
    FileChanged,
    InsufficientSpace,
    ServerError,
    TransferInterrupted,
)
from twisted_udpsuite.files.partfile import PartFile
from twisted_udpsuite.files.sinks import FetchSink, StreamSink, Writer
from twisted_udpsuite.files.wire import Fetch, ListDir, Request, ResponseHead, Stat, Status
from twisted_udpsuite.reactors import IReactorTCPTime, reactorOr

__all__ = [
    "DigestMismatch",
    "DirectoryEntry",
    "FetchError",
    "FetchResult",
    "FileChanged",
    "InsufficientSpace",
    "ServerError",
    "StatResult",
    "TransferInterrupted",
    "fetch",
    "fetchTo",
    "listDirectory",
    "stat",
]


@dataclass(frozen=True)
class FetchResult:
    """
    A finished download.

    @ivar size: the file's size; @ivar received: bytes that came over the wire
    (less than C{size} after a resume); @ivar resumedFrom: the offset it resumed at;
    @ivar path: where it was saved (None for L{fetchTo}).
    """

    path: FilePath[str] | None
    size: int
    received: int
    resumedFrom: int
    sha256: str
    version: str
    duration: float


@dataclass(frozen=True)
class DirectoryEntry:
    """One LIST entry."""

    name: str
    kind: str
    size: int
    mtime: int


@dataclass(frozen=True)
class StatResult:
    """A STAT answer; C{size} and C{version} only for files."""

    kind: str
    mtime: int
    size: int | None
    version: str | None


def _checkHead(head: ResponseHead | None) -> ResponseHead:
    assert head is not None
    if not head.ok:
        raise ServerError(head.status, head.message)
    return head


def _query(
    reactor: IReactorTCPTime,
    address: tuple[str, int],
    request: Request,
    timeout: float,
) -> Deferred[tuple[ResponseHead, bytes]]:
    """One request on its own connection; cancelling closes it."""

    async def go() -> tuple[ResponseHead, bytes]:
        protocol = await connect(reactor, address, timeout, timeout)
        try:
            head, body = await protocol.request(request, ResponseSink())
        except BaseException:
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        return _checkHead(head), body

    return Deferred.fromCoroutine(go())


def listDirectory(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    path: str = "",
    *,
    timeout: float = 30.0,
) -> Deferred[list[DirectoryEntry]]:
    """
    The entries of directory C{path} on the server (sorted by name).

    @param reactor: C{None}: the global reactor.
    """
    reactor = reactorOr(reactor)

    def parse(result: tuple[ResponseHead, bytes]) -> list[DirectoryEntry]:
        head, body = result
        entries: list[DirectoryEntry] = []
        for line in body.splitlines():
            try:
                item = json.loads(line)
                entries.append(
                    DirectoryEntry(
                        str(item["name"]), str(item["kind"]), int(item["size"]), int(item["mtime"])
                    )
                )
            except (ValueError, KeyError, TypeError):
                raise FetchError("bad listing from the server") from None
        return entries

    return _query(reactor, address, ListDir(path), timeout).addCallback(parse)


def stat(
    reactor: IReactorTCPTime | None, address: tuple[str, int], path: str, *, timeout: float = 30.0
) -> Deferred[StatResult]:
    """
    Kind, mtime and (for a file) size and version of C{path} on the server.

    @param reactor: C{None}: the global reactor.
    """
    reactor = reactorOr(reactor)

    def parse(result: tuple[ResponseHead, bytes]) -> StatResult:
        head, _ = result
        fields = head.fields
        length = fields.get("length")
        return StatResult(
            fields.get("kind", "other"),
            int(fields.get("mtime", "0")),
            int(length) if length is not None and length.isdigit() else None,
            fields.get("version"),
        )

    return _query(reactor, address, Stat(path), timeout).addCallback(parse)


def fetch(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    remote: str,
    destination: FilePath[str],
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
    retryChanged: int = 1,
) -> Deferred[FetchResult]:
    """
    Download C{remote} to C{destination} (published by rename only when verified).

    Resumes from C{destination.part} when its sidecar names the same remote file; the
    server restarts from 0 if the file's version changed.  Cancelling the Deferred
    closes the connection and keeps the part for a later resume.  Fails with
    L{ServerError} (part removed), L{DigestMismatch} (part removed), L{FileChanged}
    (part removed, after C{retryChanged} fresh attempts also saw the file change),
    L{InsufficientSpace} (part kept), L{TransferInterrupted} (part kept) or
    L{FetchError}.

    @param progress: called with (bytes of the file held so far, file size).
    @param retryChanged: how many times to fetch again, from 0, when the server says
        the file changed while it was sent (a file being replaced is usually complete
        a moment later; a file rewritten all the time is not worth chasing).
    """
    reactor = reactorOr(reactor)
    destination = destination.asTextMode()
    part = PartFile(destination, remote)
    started = reactor.seconds()
    state: dict[str, FileClientProtocol] = {}

    async def go() -> FetchResult:
        for attempt in range(retryChanged + 1):
            try:
                return await once()
            except FileChanged:
                if attempt == retryChanged:
                    raise
                FileClientProtocol.log.info(
                    "{remote} changed while it was sent: fetching it again", remote=remote
                )
        raise AssertionError("not reached")

    async def once() -> FetchResult:
        held, version = part.resumable()
        if version is None:
            held = 0
        protocol = await connect(reactor, address, timeout, idleTimeout)
        state["protocol"] = protocol
        sink = FetchSink(part, held, progress)
        sink.reactor = reactor
        sink.transport = protocol.transport
        try:
            head = await protocol.request(Fetch(remote, held, version), sink)
        except BaseException:
            sink.close()
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        try:
            if not head.ok:
                if head.status in (Status.NOT_FOUND, Status.FORBIDDEN, Status.CONFLICT):
                    part.remove()
                raise ServerError(head.status, head.message)
            trailer = sink.trailer
            assert trailer is not None
            if trailer.changed:
                sink.close()
                part.remove()
                raise FileChanged(f"{remote} changed on the server while it was sent")
            if sink.written != sink.total:
                raise FetchError("size mismatch")
            assert sink.hasher is not None
            digest = await sink.hasher.finish()
            if digest != trailer.sha256:
                sink.close()
                part.remove()
                raise DigestMismatch(f"sha256 mismatch: got {digest}, server says {trailer.sha256}")
            os.fsync(sink.fd)
            sink.close()
            os.replace(part.path, destination.path)
            try:
                os.unlink(part.sidecar)
            except FileNotFoundError:
                pass
        finally:
            sink.close()
        return FetchResult(
            destination,
            sink.total,
            sink.received,
            head.offset,
            digest,
            head.version or "",
            reactor.seconds() - started,
        )

    inner = Deferred.fromCoroutine(go())

    def cancel(d: Deferred[FetchResult]) -> None:
        protocol = state.get("protocol")
        if protocol is not None:
            protocol.transport.abortConnection()
        inner.cancel()

    outer: Deferred[FetchResult] = Deferred(cancel)

    def translate(result: FetchResult | Failure) -> FetchResult | Failure:
        if isinstance(result, Failure) and isinstance(result.value, OSError):
            if result.value.errno == errno.ENOSPC:
                return Failure(  # type: ignore[no-untyped-call]
                    FetchError("no space left on the device; the part file is kept")
                )
        return result

    inner.addBoth(translate).chainDeferred(outer)
    return outer


def fetchTo(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    remote: str,
    output: Writer,
    *,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
) -> Deferred[FetchResult]:
    """
    Stream C{remote} into C{output} (anything with C{write(bytes)}, e.g. standard
    output) as it arrives: no part file and no resume.  The sha256 is checked at the
    end, so a L{DigestMismatch} or L{FileChanged} says the bytes already written are
    not the file.  Cancelling the Deferred closes the connection.
    """
    reactor = reactorOr(reactor)
    started = reactor.seconds()

    async def go() -> FetchResult:
        protocol = await connect(reactor, address, timeout, idleTimeout)
        sink = StreamSink(output, progress)
        try:
            head = await protocol.request(Fetch(remote, 0, None), sink)
        except BaseException:
            protocol.transport.abortConnection()
            raise
        protocol.transport.loseConnection()
        _checkHead(head)
        trailer = sink.trailer
        assert trailer is not None
        if trailer.changed:
            raise FileChanged(f"{remote} changed on the server while it was sent")
        if sink.received != sink.total:
            raise FetchError("size mismatch")
        digest = sink.hasher.hexdigest()
        if digest != trailer.sha256:
            raise DigestMismatch(f"sha256 mismatch: got {digest}, server says {trailer.sha256}")
        return FetchResult(
            None,
            sink.total,
            sink.received,
            0,
            digest,
            head.version or "",
            reactor.seconds() - started,
        )

    return Deferred.fromCoroutine(go())
