"""
IPMsg attachments over TCP: offering files (L{FileOffers}, L{FileServerFactory})
and fetching them (L{fetchAttachment}).

A file offer is a SENDMSG|FILEATTACHOPT whose first extra section lists the
files (L{wire.Attachment}).  The receiver connects to the sender's TCP port
(the number of its UDP port, 2425) and sends one IPMsg header with GETFILEDATA
and the body C{packetNo:fileId:offset} (hexadecimal); the sender answers with
the file's raw bytes from that offset to the end, then closes.  There is no
length prefix and no status: the size comes from the offer, and a refusal is a
closed connection.

The offer is the access control: the server serves only the files offered in
that packet, to the address they were offered to, until the offer expires or
the receiver withdraws it (RELEASEFILES), and only what is still a regular file
(inside C{root}, when one is set).

A download is written to a hidden part file next to the destination, named
after the offer (so a second fetch of the same file resumes from what the
first one got), and published by rename only when every byte has come
(L{PartialDownload}, an L{AtomicFileWriter}).  iptux ignores the offset it is
asked for and always sends from the start, so a resume is not attempted
against it; a sender that sends more than was offered fails the download.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConnector, IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.ipmsg import wire
from twisted_udpsuite.ipmsg.wire import Attachment, FileRequest, MalformedPacket, Mode, Packet
from twisted_udpsuite.paths import AtomicFileWriter, checkWritable, isWithin
from twisted_udpsuite.reactors import IReactorTCPTime, reactorOr

__all__ = [
    "FetchResult",
    "FileOffers",
    "FileServerFactory",
    "OfferedFile",
    "PartialDownload",
    "TransferFailed",
    "fetchAttachment",
]

#: The most a GETFILEDATA request may take before we give up on it.
MAX_REQUEST = 8192
_PART_STEM_MAX = 255 - 2 - 12 - len(".part")


@dataclass
class OfferedFile:
    path: FilePath[str]
    attachment: Attachment


@dataclass
class _Offer:
    peer: str
    packetNo: int
    files: dict[int, OfferedFile]
    expires: float


class FileOffers:
    """
    The files we offer, by (peer address, packet number, file ID).

    @param lifetime: seconds an offer stands (then it is withdrawn).
    @param maxOffers: offers kept at once (the oldest goes first).
    @param root: if set, only files inside it can be offered and served.
    """

    def __init__(
        self,
        clock: IReactorTime,
        lifetime: float = 3600.0,
        maxOffers: int = 64,
        root: FilePath[str] | None = None,
    ) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.maxOffers = maxOffers
        self.root = root
        self._offers: OrderedDict[tuple[str, int], _Offer] = OrderedDict()

    def add(self, peer: str, packetNo: int, paths: Sequence[FilePath[str]]) -> list[Attachment]:
        """
        Offer C{paths} (regular files) to the host C{peer} under C{packetNo}.

        @raise ValueError: if one is not a regular file or lies outside the root.
        """
        files: dict[int, OfferedFile] = {}
        for fileId, path in enumerate(paths):
            self._check(path)
            st = os.stat(path.path)
            attachment = Attachment(fileId, path.basename(), st.st_size, int(st.st_mtime), 1)
            files[fileId] = OfferedFile(path, attachment)
        self._expire()
        while len(self._offers) >= self.maxOffers:
            self._offers.popitem(last=False)
        key = (hostOf(peer), packetNo)
        expires = self._clock.seconds() + self.lifetime
        self._offers[key] = _Offer(key[0], packetNo, files, expires)
        return [f.attachment for f in files.values()]

    def _check(self, path: FilePath[str]) -> None:
        try:
            mode = os.stat(path.path).st_mode
        except OSError as e:
            raise ValueError(f"{path.path}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path.path}: not a regular file")
        if self.root is not None and not isWithin(self.root, path):
            raise ValueError(f"{path.path}: outside {self.root.path}")

    def lookup(self, peer: str, packetNo: int, fileId: int) -> OfferedFile | None:
        """The file offered to C{peer} as C{fileId} of C{packetNo}, if still offered and safe."""
        self._expire()
        offer = self._offers.get((hostOf(peer), packetNo))
        offered = offer.files.get(fileId) if offer is not None else None
        if offered is None:
            return None
        try:
            self._check(offered.path)
        except ValueError:
            return None
        return offered

    def release(self, peer: str, packetNo: int) -> bool:
        """Withdraw an offer (RELEASEFILES from its receiver); whether there was one."""
        return self._offers.pop((hostOf(peer), packetNo), None) is not None

    def _expire(self) -> None:
        now = self._clock.seconds()
        for key in [k for k, offer in self._offers.items() if offer.expires <= now]:
            del self._offers[key]

    def __len__(self) -> int:
        self._expire()
        return len(self._offers)


# Serving


@dataclass
class FileServerStats:
    served: int = 0
    bytesSent: int = 0
    refused: int = 0


class _Limited:
    """A file object that reads at most C{left} bytes (the size that was offered)."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        self._f = f
        self.left = left

    def read(self, n: int) -> bytes:
        if self.left <= 0 or self._f.closed:  # done, or the connection went away
            return b""
        data = self._f.read(min(n, self.left))
        self.left -= len(data)
        return data


class FileServerProtocol(protocol.Protocol):
    """One GETFILEDATA connection: read the request, stream the file, close."""

    log = Logger(namespace="twisted_udpsuite.ipmsg")
    transport: ITCPTransport  # from makeConnection on, before any other call

    def __init__(self, factory: FileServerFactory) -> None:
        self.factory = factory
        self._buffer = b""
        self._timer: IDelayedCall | None = None
        self._file: BinaryIO | None = None
        self._sender: FileSender | None = None
        self._started = 0.0

    def connectionMade(self) -> None:
        reactor = self.factory.reactor
        self._started = reactor.seconds()
        self._timer = reactor.callLater(self.factory.requestTimeout, self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self._refuse("no complete request in time")

    def dataReceived(self, data: bytes) -> None:
        if self._timer is None:  # already answering, or refused
            return
        self._buffer += data
        if len(self._buffer) > MAX_REQUEST:
            self._refuse("request too long")
            return
        if not _requestComplete(self._buffer):
            return
        self._timer.cancel()
        self._timer = None
        self._serve(self._buffer)

    def _serve(self, data: bytes) -> None:
        peer = hostOf(self.transport.getPeer().host)
        try:
            packet = wire.decodePacket(data.rstrip(b"\0"))
            if packet.mode != Mode.GETFILEDATA:
                raise MalformedPacket(f"command {packet.mode:#x} is not GETFILEDATA")
            request = wire.parseFileRequest(packet.body)
        except MalformedPacket as e:
            self._refuse(f"bad request: {e}")
            return
        offered = self.factory.offers.lookup(peer, request.packetNo, request.fileId)
        if offered is None and set(f"{request.fileId:x}") <= set("0123456789"):
            # IP Messenger and iptux write file IDs in decimal in offers; some send them so.
            decimal = int(f"{request.fileId:x}")
            offered = self.factory.offers.lookup(peer, request.packetNo, decimal)
        if offered is None:
            self._refuse(f"file {request.fileId} of packet {request.packetNo} not offered to it")
            return
        size = offered.attachment.size
        if request.offset > size:
            self._refuse(f"offset {request.offset} beyond the end ({size})")
            return
        try:
            f = open(offered.path.path, "rb")  # noqa: SIM115 - closed when the transfer ends
        except OSError as e:
            self._refuse(f"cannot open {offered.path.path}: {e.strerror}")
            return
        self._file = f
        f.seek(request.offset)
        reader = _Limited(f, size - request.offset)
        sender = self._sender = FileSender()
        d = sender.beginFileTransfer(reader, self.transport)  # type: ignore[no-untyped-call]
        d.addBoth(self._sent, offered, request, reader, peer)

    def _sent(
        self,
        result: object,
        offered: OfferedFile,
        request: FileRequest,
        reader: _Limited,
        peer: str,
    ) -> None:
        sent = offered.attachment.size - request.offset - reader.left
        complete = not isinstance(result, Failure) and reader.left == 0
        stats = self.factory.stats
        stats.bytesSent += sent
        stats.served += complete
        self.log.info(
            "ipmsg sent {file} to {peer}: {bytes} bytes from offset {offset}, {outcome}",
            service="ipmsg",
            peer=peer,
            file=offered.attachment.name,
            bytes=sent,
            offset=request.offset,
            duration=self.factory.reactor.seconds() - self._started,
            outcome="completed" if complete else "failed",
        )
        self.transport.loseConnection()

    def _refuse(self, reason: str) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.factory.stats.refused += 1
        peer = self.transport.getPeer()
        self.log.info("ipmsg file request from {peer} refused: {reason}", peer=peer.host,
                      reason=reason)  # fmt: skip
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._sender is not None:
            self._sender.stopProducing()  # type: ignore[no-untyped-call]  # no-op once finished
            self._sender = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self.factory.open -= 1


def _requestComplete(data: bytes) -> bool:
    """A header's five colons and a body of three fields (ended by NUL or a third colon)."""
    fields = data.split(b":", 5)
    if len(fields) < 6:
        return False
    body = fields[5]
    return b"\0" in body or body.count(b":") >= 3


class FileServerFactory(protocol.Factory):
    """
    Serves the files of a L{FileOffers} to GETFILEDATA requests (TCP 2425).

    @param maxConnections: connections at once; more are closed at once.
    @param requestTimeout: seconds a connection may take to send its request.
    """

    noisy = False

    def __init__(
        self,
        offers: FileOffers,
        reactor: IReactorTime | None = None,
        maxConnections: int = 16,
        requestTimeout: float = 10.0,
    ) -> None:
        self.offers = offers
        self.reactor = reactorOr(reactor)
        self.maxConnections = maxConnections
        self.requestTimeout = requestTimeout
        self.stats = FileServerStats()
        self.open = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol | None:
        if self.open >= self.maxConnections:
            self.stats.refused += 1
            return None
        self.open += 1
        return FileServerProtocol(self)


# Fetching


class TransferFailed(Exception):
    """The file did not arrive whole (the part file is kept when a resume can use it)."""


@dataclass(frozen=True)
class FetchResult:
    path: FilePath[str]
    size: int
    received: int
    resumedFrom: int


class PartialDownload(AtomicFileWriter):
    """
    An L{AtomicFileWriter} whose temporary file is named after the offer
    (C{.NAME.<12 hex>.part}, hidden from listings like every upload in progress)
    and kept, not removed, when a transfer is interrupted (L{keep}): a later
    download of the same offer appends to it.
    """

    def __init__(self, target: FilePath[str], key: str, *, overwrite: bool) -> None:
        self.target = target.asTextMode()
        self.overwrite = overwrite
        self._done = False
        checkWritable(self.target, overwrite)
        stem = os.fsdecode(os.fsencode(self.target.basename())[:_PART_STEM_MAX])
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:12]
        self.tempPath = FilePath(os.path.join(self.target.dirname(), f".{stem}.{digest}.part"))
        flags = (
            os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        )
        self._fd = os.open(self.tempPath.path, flags, 0o666)
        self.bytesWritten = os.lseek(self._fd, 0, os.SEEK_END)

    def restart(self) -> None:
        """Throw away what the part holds: start from byte 0."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.bytesWritten = 0

    def keep(self) -> None:
        """Close, leaving the part for a resume."""
        if not self._done:
            self._done = True
            self._closeFd()


class _FetchProtocol(protocol.Protocol):
    transport: ITCPTransport  # from makeConnection on, before any other call

    def __init__(self, request: bytes, writer: PartialDownload, expected: int, offset: int,
                 progress: Callable[[int, int], None] | None, clock: IReactorTime,
                 idleTimeout: float) -> None:  # fmt: skip
        self.request = request
        self.writer = writer
        self.expected = expected
        self.offset = offset
        self.progress = progress
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.received = 0
        self.overflow = False
        self.error: str | None = None
        self.done: Deferred[int] = Deferred()
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        self._touch()

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idleTimeout)
        else:
            self._idle = self.clock.callLater(self.idleTimeout, self._stalled)

    def _stalled(self) -> None:
        self._idle = None
        self.error = f"no data for {self.idleTimeout:g} seconds"
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.error is not None:
            return
        left = self.expected - self.received
        if len(data) > left:
            self.overflow = True
            self.error = (
                "the sender ignored the resume offset (it sent more than was left)"
                if self.offset
                else "the sender sent more than the offered size"
            )
            self.transport.abortConnection()
            return
        try:
            self.writer.write(data)
        except OSError as e:
            self.error = f"cannot write {self.writer.target.path}: {e.strerror}"
            self.transport.abortConnection()
            return
        self.received += len(data)
        if self.progress is not None:
            self.progress(self.offset + self.received, self.offset + self.expected)
        if self.received == self.expected:
            self.transport.loseConnection()
        else:
            self._touch()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        if self.error is None and self.received < self.expected:
            done = isinstance(reason.value, ConnectionDone)
            cause = "" if done else f": {reason.getErrorMessage()}"
            self.error = f"connection closed after {self.received} of {self.expected} bytes{cause}"
        self.done.callback(self.received)


class _FetchFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, proto: _FetchProtocol) -> None:
        self.proto = proto
        self.failed: Deferred[None] = Deferred()

    def buildProtocol(self, addr: Any) -> _FetchProtocol:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed.errback(reason)


@dataclass
class _Fetch:
    writer: PartialDownload
    connector: IConnector | None = None
    proto: _FetchProtocol | None = None


def fetchAttachment(
    reactor: IReactorTCPTime | None,
    address: tuple[str, int],
    packetNo: int,
    attachment: Attachment,
    destination: FilePath[str],
    *,
    request: Packet,
    resume: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 30.0,
    idleTimeout: float = 60.0,
) -> Deferred[FetchResult]:
    """
    Fetch one offered file from the sender at C{address} (its TCP port) into
    C{destination}, published only when complete.

    @param request: the GETFILEDATA packet header to send (its body is filled
        in here); the peer builds it (L{IPMsgPeer.fetchAttachment}).
    @param resume: continue from the part left by an earlier attempt at the
        same offer (not for iptux, which always sends from the start).
    @return: fires with a L{FetchResult}; fails with L{TransferFailed} (the part
        kept for a resume), C{FileExistsError} (C{destination} exists and not
        C{overwrite}) or the connection error.  Cancelling closes the
        connection and keeps the part.
    """
    reactor = reactorOr(reactor)
    if attachment.kind != Attachment.REGULAR:
        raise ValueError(f"{attachment.name!r} is not a regular file (directories are not fetched)")
    key = f"{hostOf(address[0])}:{packetNo}:{attachment.fileId}:{attachment.size}"
    writer = PartialDownload(destination, key, overwrite=overwrite)
    if not resume or writer.bytesWritten > attachment.size:
        writer.restart()
    offset = writer.bytesWritten
    state = _Fetch(writer)

    def cancel(d: Deferred[FetchResult]) -> None:
        if state.proto is not None and state.proto.transport is not None:
            state.proto.transport.abortConnection()
        elif state.connector is not None:
            state.connector.disconnect()

    result: Deferred[FetchResult] = Deferred(cancel)

    def stop(discard: bool) -> None:
        if discard or writer.bytesWritten == 0:
            writer.abort()
        else:
            writer.keep()

    def finish(received: int) -> None:
        proto = state.proto
        if result.called:  # cancelled
            stop(discard=False)
            return
        if proto is not None and proto.error is not None:
            stop(discard=proto.overflow)
            result.errback(TransferFailed(proto.error))
            return
        try:
            writer.commit()
        except OSError as e:
            result.errback(e)
            return
        result.callback(FetchResult(writer.target, attachment.size, received, offset))

    if offset == attachment.size:
        finish(0)
        return result
    body = FileRequest(packetNo, attachment.fileId, offset).toText()
    data = wire.Packet(
        request.version, request.packetNo, request.user, request.host,
        Mode.GETFILEDATA, body, (), request.encoding,
    ).toBytes() + b"\0"  # fmt: skip
    state.proto = _FetchProtocol(
        data, writer, attachment.size - offset, offset, progress, reactor, idleTimeout
    )
    factory = _FetchFactory(state.proto)

    def connectFailed(reason: Failure) -> None:
        stop(discard=False)
        if not result.called:
            result.errback(reason)

    factory.failed.addErrback(connectFailed)
    state.proto.done.addCallback(finish)
    state.connector = reactor.connectTCP(address[0], address[1], factory, timeout=timeout)
    return result
