# -*- test-case-name: tests.tftp.test_client -*-
"""
TFTP client: L{get} downloads a file, L{put} uploads one; both return cancellable Deferreds.

This module does the client's half of the handshake (request, the server's new TID, OACK or
plain DATA 1 / ACK 0, ERROR 8 fallback, strays) and then hands the socket to the shared
transfer engine in L{twisted_udpsuite.tftp.transfer}, so client and server move blocks with the
same windowing, retransmission, rollover and dally code.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol, TypeAlias, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.paths import AtomicFileWriter
from twisted_udpsuite.reactors import IReactorUDPTime, reactorOr
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.batching import listenUDP as listenTransferPort
from twisted_udpsuite.tftp.batching import reserveReceiveBuffer, senderFor, windowBuffer
from twisted_udpsuite.tftp.netascii import NetasciiReader, NetasciiWriter, netasciiSize
from twisted_udpsuite.tftp.options import (
    OptionRefused,
    TransferOptions,
    acceptServerOptions,
    buildRequestOptions,
)
from twisted_udpsuite.tftp.trace import IWireTracer, traceProtocol
from twisted_udpsuite.tftp.transfer import (
    BlockReader,
    BlockWriter,
    EngineSettings,
    OutgoingPacket,
    Receiver,
    Sender,
    TransferStats,
)
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    encodeAck,
    parsePacket,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "DownloadTarget",
    "ProgressCallback",
    "Readable",
    "TransferResult",
    "UploadSource",
    "Writable",
    "get",
    "put",
]

DEFAULT_TIMEOUT = 1.0
"""Seconds to wait for the server's first answer before resending the request."""

_WRITE_BUFFER = 256 * 1024
_WRITE_AT_ONCE = 16 * 1024
"""A write at least this long goes to the file at once, not through the buffer."""

ProgressCallback = Callable[[int, "int | None"], None]
"""C{progress(bytesSoFar, totalOrNone)}: called as blocks move."""


@dataclass(frozen=True)
class TransferResult:
    """
    What a finished transfer did.

    @ivar bytes: Local bytes written (get) or read (put); differs from the wire count in
        netascii mode.
    @ivar options: The options in force (defaults for any the server did not accept).
    @ivar accepted: The server's OACK as sent, empty if it sent none.
    @ivar duration: Seconds from the first request to the end.
    @ivar retransmits: Packets we sent again after a timeout (request included).
    @ivar server: The server's transfer address (its TID).
    @ivar fellBack: Whether the server refused or ignored our options.
    """

    bytes: int
    options: TransferOptions
    accepted: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0
    retransmits: int = 0
    server: tuple[str, int] | None = None
    fellBack: bool = False


class Writable(Protocol):
    """Anything a download can be written to: a binary file, an L{IConsumer}."""

    def write(self, data: bytes, /) -> object:
        """Take the next bytes of the file."""


class Readable(Protocol):
    """Anything an upload can be read from: a binary file."""

    def read(self, size: int, /) -> bytes:
        """Up to C{size} bytes; C{b""} at the end."""


DownloadTarget: TypeAlias = "str | bytes | os.PathLike[str] | FilePath[str] | Writable"
"""Where L{get} writes: a path (published atomically), or a L{Writable}."""

UploadSource: TypeAlias = (
    "bytes | bytearray | memoryview | str | os.PathLike[str] | FilePath[str] | Readable"
)
"""What L{put} sends: the bytes themselves, a path, or a L{Readable}."""


class _Destination:
    """Where a download goes: a path (published atomically) or the caller's sink."""

    def __init__(self, destination: DownloadTarget) -> None:
        self._writer: AtomicFileWriter | None = None
        self._buffer: list[bytes] = []  # written in one call once _WRITE_BUFFER bytes wait
        self._buffered = 0
        self.written = 0
        if isinstance(destination, str | bytes | os.PathLike):
            destination = FilePath(os.fsdecode(destination))
        if isinstance(destination, FilePath):
            self._writer = AtomicFileWriter(destination, overwrite=True)
            self._sink: Writable = self._writer
        elif IConsumer.providedBy(destination) or hasattr(destination, "write"):
            self._sink = destination
        else:
            raise TypeError(f"cannot write a download to {destination!r}")

    def write(self, data: bytes) -> None:
        if data:
            self.written += len(data)
            if self._writer is None:
                self._sink.write(data)
                return
            if len(data) >= _WRITE_AT_ONCE:  # (a coalesced window): no copy into the buffer
                if self._buffer:
                    self._writeBuffer(self._writer)
                self._writer.write(data)
                return
            # One write(2) per block would cost more than the block's own sendto.
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered >= _WRITE_BUFFER:
                self._writeBuffer(self._writer)

    def _writeBuffer(self, writer: AtomicFileWriter) -> None:
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        writer.write(b"".join(buffer))

    def commit(self) -> None:
        if self._writer is not None:
            if self._buffer:
                self._writeBuffer(self._writer)
            self._writer.commit()

    def abort(self) -> None:
        self._buffer, self._buffered = [], 0
        if self._writer is not None:
            self._writer.abort()


class _Source:
    """What an upload reads: a path, bytes, or a file-like object with C{read(n)}."""

    def __init__(self, source: UploadSource, netascii: bool) -> None:
        self._close: IO[bytes] | None = None
        self.size: int | None = None
        if isinstance(source, bytes | bytearray | memoryview):
            source = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            source = FilePath(os.fsdecode(source))
        if isinstance(source, FilePath):
            self._close = source.open()  # (binary: FilePath opens no other way)
            source = self._close
        if not hasattr(source, "read"):
            raise TypeError(f"cannot read an upload from {source!r}")
        self._file: Readable = source
        self.bytesRead = 0
        self.size = self._measure(netascii)

    def _measure(self, netascii: bool) -> int | None:
        """The size on the wire, for C{tsize}, if the source can tell without consuming it."""
        file = cast(IO[bytes], self._file)  # if it is not seekable, AttributeError says so
        try:
            if not file.seekable():
                return None
            start = file.tell()
            if not netascii:
                end = file.seek(0, os.SEEK_END)
                file.seek(start)
                return end - start
            size = netasciiSize(iter(lambda: file.read(65536), b""))
            file.seek(start)
            return size
        except (OSError, AttributeError, ValueError):
            return None

    def read(self, size: int) -> bytes:
        """Up to C{size} local bytes (C{b""} at the end)."""
        chunk = self._file.read(size)
        self.bytesRead += len(chunk)
        return chunk

    def close(self) -> None:
        if self._close is not None:
            self._close.close()
            self._close = None


class _ClientTransfer(DatagramProtocol):
    """
    One transfer from the client's socket: the request and its answer here, the blocks in
    the shared engine. L{done} fires once, from L{_finish} (or errbacks on cancel); the port
    closes in L{_closePort}, after the engine's dally when there is an engine, so a repeated
    last DATA is still answered.
    """

    log = Logger()
    traced = False  # --trace/--pcap: every datagram by itself, none batched or coalesced

    def __init__(
        self,
        reactor: IReactorUDPTime,
        server: tuple[str, int],
        filename: bytes,
        *,
        isRead: bool,
        mode: str,
        requested: dict[str, str],
        settings: EngineSettings,
        progress: ProgressCallback | None,
        destination: _Destination | None = None,
        source: _Source | None = None,
    ) -> None:
        self._settings = settings
        self._reactor = reactor
        self._server = server
        self._filename = filename
        self._isRead = isRead
        self._mode = mode
        self._requested = requested
        self._progress = progress
        self._destination = destination
        self._source = source
        # Between the engine (wire bytes) and the file (local bytes) in netascii mode.
        self._netasciiWriter: NetasciiWriter | None = None
        self._peer: tuple[str, int] | None = None
        self._timer: IDelayedCall | None = None
        self._tries = 0
        self._retried = False
        self._engine: Receiver | Sender | None = None
        self._options = TransferOptions()
        self._accepted: dict[str, str] = {}
        self._fellBack = False
        self._retransmits = 0
        self._started = 0.0
        self._finished = False
        self._closed = False
        self._committed = False
        self.done: Deferred[TransferResult] = Deferred(self._cancel)

    # The request

    def startProtocol(self) -> None:
        self._started = self._reactor.seconds()
        self._sendRequest()

    def _requestPacket(self) -> bytes:
        cls = ReadRequest if self._isRead else WriteRequest
        return cls(self._filename, self._mode, self._requested).toBytes()

    def _sendRequest(self) -> None:
        self._peer = None
        self._tries = 0
        self._write(self._requestPacket(), self._server)
        self._armRequestTimer()

    def _armRequestTimer(self) -> None:
        self._timer = self._reactor.callLater(self._settings.timeout, self._requestTimedOut)

    def _requestTimedOut(self) -> None:
        self._timer = None
        if self._tries >= self._settings.retries:
            self._fail(
                errors.TransferTimeout(
                    f"no answer from {self._server[0]} port {self._server[1]} "
                    f"after {self._tries + 1} requests"
                ),
                sendError=False,
            )
            return
        self._tries += 1
        self._retransmits += 1
        self._write(self._requestPacket(), self._server)
        self._armRequestTimer()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # Datagrams

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if self._closed:
            return
        if self._peer is None:
            if hostOf(addr[0]) != hostOf(self._server[0]):
                self._answerStray(addr)
                return
        elif addr != self._peer:
            self._answerStray(addr)
            return
        if self._engine is not None:
            self._engine.datagramReceived(datagram)
            return
        if self._finished:
            return
        try:
            packet = parsePacket(datagram)
        except MalformedPacket as e:
            self.log.debug("ignoring a malformed packet from {peer}: {error}", peer=addr, error=e)
            return
        self._answerReceived(packet, addr)

    def datagramsReceived(self, datagrams: list[memoryview], addr: tuple[str, int]) -> None:
        """Several datagrams from one source read at once (a coalesced window), as views."""
        engine = self._engine
        if isinstance(engine, Receiver) and not self._closed and addr == self._peer:
            engine.windowReceived(datagrams)
            return
        for datagram in datagrams:
            self.datagramReceived(bytes(datagram), addr)

    def _answerStray(self, addr: tuple[str, int]) -> None:
        """RFC 1350: a packet from another TID gets ERROR 5, and the transfer goes on."""
        self.log.debug("packet from unknown transfer ID {source}", source=addr)
        if isUnanswerableSource(addr[0]):
            return  # forged: ERROR 5 to a broadcast source would reach a whole LAN
        self._write(Error(ErrorCode.UNKNOWN_TRANSFER_ID, "Unknown transfer ID").toBytes(), addr)

    def _answerReceived(self, packet: Packet, addr: tuple[str, int]) -> None:
        """The server's first packet: it fixes the TID and says which options hold."""
        if isinstance(packet, Error):
            self._peer = addr
            if packet.code == ErrorCode.OPTION_REFUSED and self._requested and not self._retried:
                # RFC 2347: the server refused our options; ask again without them.
                self.log.info(
                    "{server} refused options ({message}); retrying without",
                    server=self._server,
                    message=packet.message,
                )
                self._cancelTimer()
                self._retried = True
                self._fellBack = True
                self._requested = {}
                self._sendRequest()
                return
            self._fail(errors.errorFor(packet), sendError=False)
            return
        if isinstance(packet, OptionAck):
            self._peer = addr
            try:
                self._options = acceptServerOptions(self._requested, packet.options)
            except OptionRefused as e:
                self._fail(errors.OptionNegotiationRefused(str(e)), sendError=True)
                return
            self._accepted = dict(packet.options)
            self._fellBack = self._fellBack or set(self._accepted) != set(self._requested)
            self._cancelTimer()
            self._startEngine(first=None)
            return
        if self._isRead and isinstance(packet, Data):
            self._peer = addr
            self._fellBack = self._fellBack or bool(self._requested)
            self._options = TransferOptions()
            self._cancelTimer()
            self._startEngine(first=packet)
            return
        if not self._isRead and isinstance(packet, Ack):
            if packet.block != 0:
                return
            self._peer = addr
            self._fellBack = self._fellBack or bool(self._requested)
            self._options = TransferOptions()
            self._cancelTimer()
            self._startEngine(first=None)
            return
        self._peer = addr
        self._fail(
            errors.ProtocolError(f"unexpected {type(packet).__name__} in answer to the request"),
            sendError=True,
        )

    # The blocks: the shared engine (twisted_udpsuite.tftp.transfer)

    def _sendToPeer(self, packet: OutgoingPacket) -> None:
        # Bytes-like: the engines here are not told that send takes (header, payload) pairs.
        if not self._closed and self._peer is not None:
            self._write(cast(bytes, packet), self._peer)

    def _receiveWindows(self) -> None:
        """
        A download in windows: read each window in one call where the kernel coalesces
        (GRO), and make the receive buffer hold one, with a warning where it cannot: every
        overflow costs a retransmission timeout.
        """
        options = self._options
        if options.windowsize < 2:
            return
        transport = self.transport
        receiveCoalesced = getattr(transport, "receiveCoalesced", None)  # a TransferPort's
        if receiveCoalesced is not None and not self.traced:
            receiveCoalesced()
        wanted = windowBuffer(options.blksize, options.windowsize)
        got, short = reserveReceiveBuffer(getattr(transport, "socket", transport), wanted)
        if short:
            self.log.warn(
                "the receive buffer holds {got} bytes, short of the {wanted} a window of "
                "{windowsize} x {blksize} bytes needs: expect resends (raise "
                "net.core.rmem_max, or ask for a smaller window)",
                got=got,
                wanted=wanted,
                windowsize=options.windowsize,
                blksize=options.blksize,
            )

    def _startEngine(self, first: Data | None) -> None:
        """Hand the blocks to L{Receiver} or L{Sender}; the handshake is over."""
        engine: Receiver | Sender
        assert self._peer is not None
        sender = None if self.traced else senderFor(self.transport, self._peer)
        send = self._sendToPeer if sender is None else sender.send
        netascii = self._mode == "netascii"
        if self._isRead:
            assert self._destination is not None
            self._receiveWindows()
            sink: BlockWriter = self._destination
            if netascii:
                sink = self._netasciiWriter = NetasciiWriter(self._destination)
            engine = Receiver(
                send,
                self._reactor,
                self._options,
                _CountingWriter(sink, _Progress(self._progress, self._options.tsize)),
                self._settings,
                commit=self._commitDestination,
                writesAtOnce=True,
            )
        else:
            assert self._source is not None
            source: BlockReader = NetasciiReader(self._source) if netascii else self._source
            engine = Sender(
                send,
                self._reactor,
                self._options,
                _CountingReader(source, _Progress(self._progress, self._source.size)),
                self._settings,
                sendWindow=None if sender is None else sender.sendWindow,
            )
        self._engine = engine
        engine.done.addCallbacks(self._engineDone, self._engineFailed)
        engine.finished.addCallback(lambda _: self._closePort())
        if isinstance(engine, Sender):
            engine.start(None)
        elif first is None:
            engine.start(encodeAck(0))
        else:
            engine.start(None)
            engine.dataReceived(first.block, first.data)

    def _commitDestination(self) -> None:
        """Publish the download before its last ACK, so a failure reaches the server."""
        assert self._destination is not None
        self._committed = True
        self._publish(self._destination)

    def _publish(self, destination: _Destination) -> None:
        """Write what the netascii decoder holds back, then publish the file."""
        if self._netasciiWriter is not None:
            self._netasciiWriter.flush()
        destination.commit()

    def _engineDone(self, stats: TransferStats) -> None:
        self._retransmits += stats.retransmits
        if not self._finished:
            self._finish(self._result())

    def _engineFailed(self, failure: Failure) -> None:
        engine = self._engine
        if engine is not None:
            self._retransmits += engine.stats.retransmits
        if not self._finished:
            self._finish(failure)

    # Endings

    def _write(self, packet: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport
        assert transport is not None  # only a listening transfer sends
        try:
            transport.write(packet, addr)
        except OSError as e:
            self.log.warn("cannot send to {peer}: {error}", peer=addr, error=e)

    def _fail(self, error: errors.TFTPError, *, sendError: bool) -> None:
        if self._finished:
            return
        if sendError and self._peer is not None:
            message = error.message or type(error).__name__
            self._write(Error(error.code, message).toBytes(), self._peer)
        self._finish(Failure(error))  # type: ignore[no-untyped-call]  # (unannotated)

    def _cancel(self, d: Deferred[TransferResult]) -> None:
        """Cancelling the Deferred: tell the server, then clean up (L{done} errbacks itself)."""
        if self._finished:
            return
        self._finished = True
        cancelled = errors.TFTPError("Transfer cancelled")
        if self._engine is not None:
            self._engine.abort(cancelled, sendError=True)
        elif self._peer is not None:
            self._write(Error(cancelled.code, cancelled.message).toBytes(), self._peer)
        self._cleanUp(succeeded=False)
        self._closePort()

    def _finish(self, outcome: Failure | TransferResult) -> None:
        """Fire L{done} once; the port stays open while the engine dallies."""
        self._finished = True
        self._cancelTimer()
        succeeded = isinstance(outcome, TransferResult)
        try:
            self._cleanUp(succeeded)
        except Exception:
            outcome = Failure()  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
        engine = self._engine
        if engine is None or engine.finished.called:
            self._closePort()
        if isinstance(outcome, Failure):
            self.done.errback(outcome)
        else:
            self.done.callback(outcome)

    def _cleanUp(self, succeeded: bool) -> None:
        self._cancelTimer()
        source, self._source = self._source, None
        if source is not None:
            source.close()
        destination, self._destination = self._destination, None
        if destination is not None:
            if succeeded and not self._committed:
                try:
                    self._publish(destination)
                except Exception:
                    destination.abort()
                    raise
            elif not succeeded:
                destination.abort()

    def _closePort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancelTimer()
        if self.transport is not None:
            self.transport.stopListening()

    def _result(self) -> TransferResult:
        moved = self._moved()
        return TransferResult(
            bytes=moved,
            options=self._options,
            accepted=self._accepted,
            duration=self._reactor.seconds() - self._started,
            retransmits=self._retransmits,
            server=self._peer,
            fellBack=self._fellBack,
        )

    def _moved(self) -> int:
        if self._destination is not None:
            return self._destination.written
        if self._source is not None:
            return self._source.bytesRead
        return 0


class _Progress:
    """Counts the wire bytes moved and reports them to C{progress}, against C{total}."""

    def __init__(self, progress: ProgressCallback | None, total: int | None) -> None:
        self._progress = progress
        self._total = total
        self.count = 0

    def moved(self, count: int) -> None:
        self.count += count
        if self._progress is not None:
            self._progress(self.count, self._total)


class _CountingWriter:
    """Passes wire bytes to the destination, counting them."""

    def __init__(self, destination: BlockWriter, progress: _Progress) -> None:
        self._destination = destination
        self._progress = progress

    def write(self, data: bytes) -> None | Deferred[None]:
        written = self._destination.write(data)
        self._progress.moved(len(data))
        return written


class _CountingReader:
    """Reads wire blocks from the source, counting them."""

    def __init__(self, source: BlockReader, progress: _Progress) -> None:
        self._source = source
        self._progress = progress

    def read(self, n: int) -> bytes | Deferred[bytes]:
        block = self._source.read(n)
        if isinstance(block, Deferred):
            return block.addCallback(self._counted)
        return self._counted(block)

    def _counted(self, block: bytes) -> bytes:
        self._progress.moved(len(block))
        return block


def _filename(remote: str | bytes) -> bytes:
    return remote.encode("utf-8") if isinstance(remote, str) else bytes(remote)


def _settings(timeout: int | None, retries: int, rollover: int = 0) -> EngineSettings:
    """The engine's settings for a client transfer: C{timeout} also times the request."""
    return EngineSettings(
        retries=retries,
        timeout=float(timeout) if timeout else DEFAULT_TIMEOUT,
        rollover=rollover,
    )


def _checkMode(mode: str) -> str:
    mode = mode.lower()
    if mode not in ("octet", "netascii"):
        raise ValueError(f"mode must be 'octet' or 'netascii', not {mode!r}")
    return mode


def _listen(
    reactor: IReactorUDPTime,
    server: tuple[str, int],
    protocol: _ClientTransfer,
    tracer: IWireTracer | None = None,
) -> None:
    if tracer is not None:
        protocol.traced = True
        traceProtocol(protocol, tracer, "_write")
    interface = "::" if ":" in server[0] else ""
    listenTransferPort(reactor, 0, protocol, interface, maxPacketSize=65536)


def get(
    reactor: IReactorUDPTime | None,
    server: tuple[str, int],
    remote: str | bytes,
    destination: DownloadTarget,
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: int | None = None,
    tsize: bool = True,
    retries: int = 5,
    progress: ProgressCallback | None = None,
    tracer: IWireTracer | None = None,
) -> Deferred[TransferResult]:
    """
    Download C{remote} from a TFTP server.

    @param reactor: Provides C{listenUDP} and C{callLater} (a
        L{twisted_udpsuite.testing.MemoryHost} in tests); C{None}: the global reactor.
    @param server: The server's (IP address, port); IPv6 works too.
    @param destination: A path (C{str} or L{FilePath}), written to a temporary sibling and
        renamed over it only when the whole file has arrived; or anything with C{write}
        (a binary file, an L{IConsumer}), which then gets whatever arrived before a failure.
    @param blksize: Block size to ask for (RFC 2348); C{None} asks nothing (512).
    @param windowsize: Blocks per ACK to ask for (RFC 7440); C{None} asks nothing (1).
    @param timeout: Retransmission timeout in whole seconds to ask for (RFC 2349), also used
        by us; C{None} asks nothing and uses L{DEFAULT_TIMEOUT}.
    @param tsize: Ask the server for the file's size (RFC 2349), for progress.
    @param retries: How often an unanswered packet is sent again before giving up.
    @param progress: Called with (bytes so far, size or C{None}) as blocks arrive.
    @param tracer: Gets every datagram sent and received (L{twisted_udpsuite.tftp.trace}).
    @return: Fires with a L{TransferResult}, or fails with a L{errors.TFTPError}
        (L{errors.FileNotFound}, L{errors.TransferTimeout}, ...). Cancelling it sends an ERROR
        to the server, closes the port, stops the timers and removes the temporary file.
    """
    reactor = reactorOr(reactor)
    mode = _checkMode(mode)
    requested = buildRequestOptions(
        blksize=blksize, timeout=timeout, tsize=0 if tsize else None, windowsize=windowsize
    )
    sink = _Destination(destination)
    protocol = _ClientTransfer(
        reactor,
        server,
        _filename(remote),
        isRead=True,
        mode=mode,
        requested=requested,
        settings=_settings(timeout, retries),
        progress=progress,
        destination=sink,
    )
    try:
        _listen(reactor, server, protocol, tracer)
    except Exception:
        sink.abort()
        raise
    return protocol.done


def put(
    reactor: IReactorUDPTime | None,
    server: tuple[str, int],
    source: UploadSource,
    remote: str | bytes,
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: int | None = None,
    tsize: bool = True,
    retries: int = 5,
    progress: ProgressCallback | None = None,
    rollover: int = 0,
    tracer: IWireTracer | None = None,
) -> Deferred[TransferResult]:
    """
    Upload to C{remote} on a TFTP server.

    @param source: A path (C{str} or L{FilePath}), C{bytes}, or a binary file-like object
        with C{read(n)}. Its size is sent as C{tsize} when it can be told without reading it
        up front (a path or a seekable file), so the server can refuse early (ERROR 3).
    @param rollover: The block number after 65535: 0 (what most servers expect) or 1.
    @return: As for L{get}; the other parameters too.
    """
    reactor = reactorOr(reactor)
    mode = _checkMode(mode)
    settings = _settings(timeout, retries, rollover)
    reader = _Source(source, netascii=mode == "netascii")
    try:
        requested = buildRequestOptions(
            blksize=blksize,
            timeout=timeout,
            tsize=reader.size if tsize else None,
            windowsize=windowsize,
        )
        protocol = _ClientTransfer(
            reactor,
            server,
            _filename(remote),
            isRead=False,
            mode=mode,
            requested=requested,
            settings=settings,
            progress=progress,
            source=reader,
        )
        _listen(reactor, server, protocol, tracer)
    except Exception:
        reader.close()
        raise
    return protocol.done
