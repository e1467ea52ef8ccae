# -*- test-case-name: tests.tftp.test_server -*-
"""
The TFTP server: a request port (L{TFTPServerProtocol}) and one L{TFTPSession} per transfer,
each on its own ephemeral port (its TID, RFC 1350), moving blocks with the shared engine of
L{twisted_udpsuite.tftp.transfer}.

Safety first: malformed requests get ERROR 4 or silence (never an exception), broadcast and
multicast sources are never answered, each client address has a request rate and a number of
concurrent transfers, and the total number of transfers is capped. A repeated request from a
client port whose transfer is running is ignored (the running session answers it).

On a wildcard address each transfer port is bound to the address the request was sent to
(L{twisted_udpsuite.localaddress}), so a host with several addresses answers from the one
its client knows.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.drain import Drain, IDrainable
from twisted_udpsuite.localaddress import ILocalAddressReceiver, writeFrom
from twisted_udpsuite.ratelimit import PerSourceLimiter
from twisted_udpsuite.reactors import IReactorUDPTime, reactorOr
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.backend import IBackend, IReader, IWriter
from twisted_udpsuite.tftp.batching import DatagramSender, senderFor
from twisted_udpsuite.tftp.batching import listenUDP as listenTransferPort
from twisted_udpsuite.tftp.mtu import routeMTU
from twisted_udpsuite.tftp.netascii import NetasciiReader, NetasciiWriter
from twisted_udpsuite.tftp.options import (
    ServerOptionLimits,
    TransferOptions,
    TransferTooLarge,
    blksizeForMTU,
    checkUploadSize,
    negotiateServerOptions,
)
from twisted_udpsuite.tftp.trace import IWireTracer, traceProtocol
from twisted_udpsuite.tftp.transfer import (
    DEFAULT_TIMEOUT,
    BlockReader,
    BlockWriter,
    EngineSettings,
    OutgoingPacket,
    Receiver,
    Send,
    Sender,
    TransferStats,
    errorPacket,
)
from twisted_udpsuite.tftp.wire import (
    ErrorCode,
    MalformedPacket,
    Opcode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    encodeAck,
    parsePacket,
)
from twisted_udpsuite.unreachable import IUnreachableReceiver

__all__ = [
    "ABORTED_AFTER_OACK",
    "COMPLETED",
    "COMPLETED_UNCONFIRMED",
    "CUT",
    "FAILED",
    "MAX_PACKET",
    "ServerPolicy",
    "TFTPServerProtocol",
    "TFTPSession",
]

# The outcomes of the transfer-end event (its "outcome" field):
COMPLETED = "completed"
"""The client confirmed every block."""
COMPLETED_UNCONFIRMED = "completed-unconfirmed"
"""Every block was sent; the final ACK never came, but the client is gone or silent (a lost
final ACK from a client that closed its port at once, as iPXE, pxelinux and curl do)."""
FAILED = "failed"
"""A real failure, or a refused request; C{reason} says which."""
ABORTED_AFTER_OACK = "aborted-after-oack"
"""The client ended it after our OACK: a PXE ROM that only wanted C{tsize}. Routine."""
CUT = "cut"
"""The server stopped the transfer (it was shutting down)."""

Address = tuple[str, int]

MAX_PACKET = 65536
"""Receive buffer for every TFTP socket: blksize reaches 65464 (RFC 2348)."""

_REQUEST_OPCODES = (int(Opcode.RRQ), int(Opcode.WRQ))
_REQUEST_HEADS = tuple(opcode.to_bytes(2, "big") for opcode in _REQUEST_OPCODES)


@dataclass(frozen=True)
class ServerPolicy:
    """
    The server's limits and choices.

    @ivar rate: Requests per second per client address (C{None}: unlimited); a request over
        it is dropped silently (answering a flood would make us a reflector).
    @ivar burst: Requests a client may send at once.
    @ivar maxTransfers: Concurrent transfers in total.
    @ivar maxTransfersPerClient: Concurrent transfers per client address.
    @ivar retries: Resends of an unanswered packet before a transfer is abandoned. With the
        adaptive timeout the first ones come fast; a download's resends then back off to
        L{transfer.QUIET_GAP} seconds apart, a silence long enough for a client that
        answers only on its own timer (atftp re-ACKs a repeated DATA once, then waits for
        5 s without any packet), so a download whose client falls silent ends after about
        50 s.
    @ivar timeout: Largest retransmission timeout (s) when the client does not choose one.
    @ivar rollover: Block number after 65535 when sending (0 or 1).
    @ivar unansweredRetries: Resends allowed before the client has answered at all: a
        spoofed request must not turn into C{retries} full blocks of reflected traffic.
    @ivar socketBuffer: C{SO_SNDBUF}/C{SO_RCVBUF} asked for each transfer socket, so a
        window of large blocks is not dropped by the kernel (capped by C{wmem_max}).
    @ivar dally: Seconds an upload's port stays open after its final ACK, to ACK again a
        repeated last DATA (our ACK was lost). It must outlast the client's own resend
        interval: curl resends a block only after 72 s (with no C{--max-time}); 160 s
        also covers a lost resend. A dallying upload no longer counts as a transfer;
        unasked it sends only one more copy of the final ACK, a round trip or two later.
    @ivar maxDallying: Dallying uploads kept at once; past it the oldest stops dallying. A
        new request from a dallying upload's client port also ends that dally.
    @ivar finalResends: Resends of a download's last window, with no word from the client,
        after which it ends as L{COMPLETED_UNCONFIRMED} instead of failing after all
        C{retries}: iPXE, pxelinux and curl close their port right after the final ACK, so
        when that ACK is lost nothing answers any more (with the adaptive timeout, three
        resends take well under a second on a LAN, 15 s at most with a 1 s timeout).
        Sooner when the client's port answers ICMP port unreachable, or its host asks for
        another file.
    @ivar firstDataWait: Seconds an upload whose OACK is unanswered waits for DATA 1,
        never resending the OACK (that makes curl shift the file by a block; a repeated
        WRQ is answered and restarts the wait). Where the OACK granted only defaults
        (blksize 512, windowsize 1) up to C{unansweredRetries} ACK 0s are sent meanwhile,
        which curl answers by resending DATA 1 at once; otherwise it waits silently. curl
        resends a lost DATA 1 on its own only after 72 s (with no C{--max-time}), so this
        covers two of its resends. The upload counts as a transfer meanwhile.
    @ivar portRange: C{(low, high)}: transfer ports are chosen at random in this range
        (both included) instead of by the kernel, for a firewall that lets only these
        through (tftpd-hpa's C{-R}); a request when all are busy gets ERROR 0.
    @ivar maxDuration: Seconds a transfer may take, from its request to its last block
        (C{None}: no limit); a longer one is ended with ERROR 0 and logged as failed.
    @ivar fitMTU: Lower each transfer's blksize so that its DATA packets fit the MTU of
        the route back to the client from the address the request arrived at (its
        interface's, on a LAN): no IP fragments, which firmware that asks for large
        blocks through a small-MTU path cannot reassemble.
    """

    limits: ServerOptionLimits = field(default_factory=ServerOptionLimits)
    rate: float | None = 20.0
    burst: float = 40.0
    maxTransfers: int = 256
    maxTransfersPerClient: int = 16
    retries: int = 12
    timeout: float = DEFAULT_TIMEOUT
    rollover: int = 0
    unansweredRetries: int = 3
    socketBuffer: int = 4 * 1024 * 1024
    dally: float = 160.0
    maxDallying: int = 256
    firstDataWait: float = 160.0
    finalResends: int = 3
    portRange: tuple[int, int] | None = None
    maxDuration: float | None = None
    fitMTU: bool = False

    def __post_init__(self) -> None:
        if self.portRange is not None:
            low, high = self.portRange
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"portRange {low}:{high} is not within 1..65535, low first")
        if self.maxDuration is not None and self.maxDuration <= 0:
            raise ValueError("maxDuration must be positive")

    def engineSettings(self) -> EngineSettings:
        """What every transfer's engine does by this policy (downloads and uploads alike)."""
        return EngineSettings(
            retries=self.retries,
            timeout=self.timeout,
            rollover=self.rollover,
            unansweredRetries=self.unansweredRetries,
            finalResends=self.finalResends,
            dally=max(self.dally, self.timeout),
            firstDataWait=self.firstDataWait,
            nudges=self.unansweredRetries,
            repeatFinalAck=True,
        )


def _whenDone(call: Callable[[], Deferred[None] | None]) -> Deferred[None]:
    """C{maybeDeferred} for a call whose result is None or a Deferred of it."""
    return cast("Deferred[None]", maybeDeferred(call))


@implementer(ILocalAddressReceiver, IDrainable)
class TFTPServerProtocol(DatagramProtocol):
    """
    The well-known port: parses requests and starts sessions; never transfers blocks itself.

    @ivar sessions: Running sessions by client (address, port).
    @ivar mtuOf: With L{ServerPolicy.fitMTU}: C{(local address, client address)} to the
        MTU its answers must fit, or None if unknown (L{routeMTU}; tests replace it).
    @ivar tracer: Gets every datagram of the request port and of each transfer
        (C{--trace}, C{--pcap}), or None.
    """

    mtuOf: Callable[[str, str], int | None] = staticmethod(routeMTU)

    log = Logger(namespace="twisted_udpsuite.tftp.server")

    def __init__(
        self,
        backend: IBackend,
        policy: ServerPolicy | None = None,
        *,
        reactor: IReactorUDPTime | None = None,
        interface: str | None = None,
        tracer: IWireTracer | None = None,
    ) -> None:
        self.backend = IBackend(backend)
        self.tracer = tracer
        self.policy = policy if policy is not None else ServerPolicy()
        self._reactor = reactorOr(reactor)
        self._interface = interface
        self.sessions: dict[tuple[str, int], TFTPSession] = {}
        self._perClient: dict[str, int] = {}
        self._active = 0  # transfers running (dallying uploads not counted)
        self._dallying: dict[TFTPSession, None] = {}  # finished uploads, oldest first
        self._limiter = (
            PerSourceLimiter(self._reactor, self.policy.rate, self.policy.burst)
            if self.policy.rate
            else None
        )
        self._drain = Drain(self._reactor, self._cutRunning)
        self._random = random.SystemRandom()  # transfer ports in a range: unpredictable

    def startProtocol(self) -> None:
        if self._interface is None:
            self._interface = self._port.getHost().host

    @property
    def _port(self) -> IUDPTransport:
        transport = self.transport
        assert transport is not None  # (listening)
        return transport

    def stopProtocol(self) -> None:
        for session in list(self.sessions.values()):
            session.abort(errors.TFTPError("Server shutting down"))

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self.datagramReceivedAt(datagram, addr, None)

    def datagramReceivedAt(self, datagram: bytes, addr: Address, local: str | None) -> None:
        """A request sent to C{local}: its transfer port is bound there (None: as we are)."""
        if self.tracer is not None:
            self.tracer.datagram(False, self._here(local), (addr[0], addr[1]), datagram)
        try:
            self._received(datagram, (addr[0], addr[1]), local)
        except Exception:
            self.log.failure("handling a request from {peer}", peer=addr)

    def _here(self, local: str | None) -> tuple[str, int]:
        return (local or self._interface or "", self._port.getHost().port)

    def _reply(self, packet: bytes, addr: tuple[str, int], local: str | None) -> None:
        if self.tracer is not None:
            self.tracer.datagram(True, self._here(local), addr, packet)
        try:
            writeFrom(self.transport, packet, addr, local)
        except Exception as e:
            self.log.debug("cannot answer {peer}: {error}", peer=addr, error=e)

    def _received(self, datagram: bytes, addr: tuple[str, int], local: str | None) -> None:
        if addr[1] == 0 or isUnanswerableSource(addr[0]):
            return
        session = self.sessions.get(addr)
        if session is not None:
            isRequest = datagram[:2] in _REQUEST_HEADS
            if not (isRequest and session in self._dallying):
                # A repeated request (our first answer was lost): one session, answered again.
                if isRequest and session.engine is not None:
                    session.engine.repeatInitial()
                return
            # The client port of a finished upload asks again: a new transfer, not a repeat.
            session.abort(errors.TFTPError("New request from the same port"))
        client = hostOf(addr[0])
        if self._limiter is not None and not self._limiter.allow(client):
            self.log.debug("request rate limit hit by {client}", client=client, tftpRefused="rate")
            return
        try:
            packet = parsePacket(datagram)
        except MalformedPacket as e:
            self.log.debug("malformed request from {peer}: {error}", peer=addr, error=e)
            if len(datagram) >= 2 and datagram[1] in _REQUEST_OPCODES and datagram[0] == 0:
                self._reply(
                    errorPacket(ErrorCode.ILLEGAL_OPERATION, "Malformed request"), addr, local
                )
            return
        if not isinstance(packet, ReadRequest | WriteRequest):
            self.log.debug(
                "{kind} to the request port from {peer}", kind=type(packet).__name__, peer=addr
            )
            return
        if packet.mode not in ("octet", "netascii"):
            message = (
                "Mail mode is not supported"
                if packet.mode == "mail"
                else f"Unknown transfer mode {packet.mode!r}"
            )
            self._reply(errorPacket(ErrorCode.ILLEGAL_OPERATION, message), addr, local)
            return
        if self._drain.stopping:
            self.log.info(
                "refusing {peer}: the server is stopping", peer=addr, tftpRefused="stopping"
            )
            self._reply(errorPacket(ErrorCode.NOT_DEFINED, "Server is stopping"), addr, local)
            return
        if self._active >= self.policy.maxTransfers:
            self.log.warn(
                "refusing {peer}: {count} transfers running",
                peer=addr,
                count=self._active,
                tftpRefused="max-transfers",
            )
            self._reply(
                errorPacket(ErrorCode.NOT_DEFINED, "Server busy, try again later"), addr, local
            )
            return
        if self._perClient.get(client, 0) >= self.policy.maxTransfersPerClient:
            self.log.warn(
                "refusing {peer}: too many transfers from {client}",
                peer=addr,
                client=client,
                tftpRefused="max-transfers-per-client",
            )
            self._reply(
                errorPacket(ErrorCode.NOT_DEFINED, "Too many transfers from your address"),
                addr,
                local,
            )
            return
        self._clientMovedOn(addr, packet.filename)
        session = TFTPSession(self, packet, addr)
        address = local or self._interface or ""
        if self.policy.fitMTU:
            session.maxBlksize = self._fittingBlksize(address, addr[0])
        try:
            self._listenTransferPort(session, address)
        except Exception as e:
            self.log.error("cannot open a transfer port: {error}", error=e)
            self._reply(
                errorPacket(ErrorCode.NOT_DEFINED, "Server cannot open a port"), addr, local
            )
            return
        if self.tracer is not None:
            traceProtocol(session, self.tracer, "_send", peer=addr)
        self.sessions[addr] = session
        self._perClient[client] = self._perClient.get(client, 0) + 1
        self._active += 1
        session.counted = True
        # No text: a signal for structured observers (metrics), not a human log line.
        self.log.debug(
            tftpTransferStarted=True,
            direction="RRQ" if session.isRead else "WRQ",
            peer=addr,
            file=session.filename,
        )
        session.begin()

    def _listenTransferPort(self, session: TFTPSession, address: str) -> None:
        """A port for C{session}: the kernel's choice, or a free one in the policy's range."""
        portRange = self.policy.portRange
        if portRange is None:
            listenTransferPort(self._reactor, 0, session, address, MAX_PACKET)
            return
        low, high = portRange
        count = high - low + 1
        first = self._random.randrange(count)
        for step in range(count):
            port = low + (first + step) % count
            try:
                listenTransferPort(self._reactor, port, session, address, MAX_PACKET)
                return
            except CannotListenError:
                continue
        raise CannotListenError(  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
            address, 0, OSError(errno.EADDRINUSE, "port range in use")
        )

    def _fittingBlksize(self, local: str, client: str) -> int | None:
        """The largest blksize whose DATA fits the MTU towards C{client}, if known."""
        if local in ("", "0.0.0.0", "::"):
            return None  # the kernel did not say where the request arrived
        mtu = self.mtuOf(local, client)
        if mtu is None:
            return None
        return blksizeForMTU(mtu, 6 if ":" in hostOf(client) else 4)

    def _clientMovedOn(self, addr: tuple[str, int], filename: bytes) -> None:
        """
        A request for another file from a host whose download waits for its final ACK: a
        boot loader that moved on (its final ACK was lost). That download ends (after one
        last resend: see L{Sender.peerMovedOn}).
        """
        for other in list(self.sessions.values()):
            engine = other.engine
            if (
                isinstance(engine, Sender)
                and other.peer[0] == addr[0]
                and other.peer != addr
                and other.request.filename != filename
            ):
                engine.peerMovedOn()

    def _transferEnded(self, session: TFTPSession) -> None:
        """A transfer stops counting against the limits (once), even if its port dallies."""
        if not session.counted:
            return
        session.counted = False
        self._active -= 1
        client = hostOf(session.peer[0])
        left = self._perClient.get(client, 1) - 1
        if left > 0:
            self._perClient[client] = left
        else:
            self._perClient.pop(client, None)
        self._drain.check(not self._active)

    # Stopping without cutting transfers

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Stop taking requests (a new one gets ERROR "Server is stopping"; the running
        sessions still answer their own repeats) and let the running transfers finish for
        up to C{timeout} seconds; then abort the rest, which log the outcome C{cut}.

        Finished uploads that only dally do not hold it up: the request port's
        C{stopListening} ends them as before.

        @return: fires once no transfer is running.
        """
        return self._drain.begin(timeout, not self._active)

    def _cutRunning(self) -> None:
        for session in list(self.sessions.values()):
            if session.counted:
                session.abort(errors.TFTPError("Server is stopping"))

    def _startedDallying(self, session: TFTPSession) -> None:
        """A finished upload keeps its port a while; the oldest go past L{maxDallying}."""
        dallying = self._dallying
        dallying[session] = None
        while len(dallying) > self.policy.maxDallying:
            oldest = next(iter(dallying))
            del dallying[oldest]
            oldest.abort(errors.TFTPError("Too many finished uploads dallying"))

    def _sessionClosed(self, session: TFTPSession) -> None:
        self._dallying.pop(session, None)
        self._transferEnded(session)
        if self.sessions.get(session.peer) is session:
            del self.sessions[session.peer]


@implementer(IUnreachableReceiver)
class TFTPSession(DatagramProtocol):
    """
    One transfer on its own port: opens the file, negotiates, runs a L{Sender} (RRQ) or a
    L{Receiver} (WRQ), answers strays with ERROR 5, and logs one event when it ends.
    """

    log = Logger(namespace="twisted_udpsuite.tftp.transfer")
    noisy = False  # one log event per transfer is ours; no "starting/stopping" lines

    def __init__(
        self,
        server: TFTPServerProtocol,
        request: ReadRequest | WriteRequest,
        peer: tuple[str, int],
    ) -> None:
        self.server = server
        self.request = request
        self.peer = peer
        self.counted = False  # whether it counts against the server's transfer limits
        self.isRead = isinstance(request, ReadRequest)
        self.netascii = request.mode == "netascii"
        self.engine: Sender | Receiver | None = None
        self.options = TransferOptions()
        self.oack: dict[str, str] = {}
        self._reactor = server._reactor
        self._reader: IReader | None = None
        self._writer: IWriter | None = None
        self._netasciiSink: NetasciiWriter | None = None  # between the engine and _writer
        self._committed = False
        self._ended = False
        self._closed = False
        self._cut = False  # stopped by the server (abort), not by the peer or the network
        self._opening: Deferred[Any] | None = None
        self._started = self._reactor.seconds()
        self.stats = TransferStats()
        self._sendsPairs = False  # set when _send is a real socket's (sendmsg)
        self.maxBlksize: int | None = None  # a cap below the policy's (--fit-mtu)
        self._deadline: IDelayedCall | None = None  # the policy's maxDuration
        self._sender: DatagramSender | None = None
        self._send: Send = self._writeToPeer  # or the DatagramSender's, once listening

    @property
    def filename(self) -> str:
        return self.request.filename.decode("utf-8", errors="backslashreplace")

    def startProtocol(self) -> None:
        # The hot path: send with the socket's own calls (a window in one GSO batch where
        # the kernel can). udp.Port.write checks the address three times per datagram (a
        # fifth of the per-block cost); the peer's address was checked once, when the
        # request came in.
        if self.server.tracer is not None:
            return  # --trace/--pcap see every datagram: one per call, none batched
        sender = senderFor(self.transport, self.peer, fileShrank=self._fileShrankSoon)
        if sender is None:
            return
        self._sender = sender
        self._send = sender.send
        self._sendsPairs = True
        # A udp.Port (or a test's port): maxThroughput and socket are not in IUDPTransport.
        port: Any = self.transport
        if self.isRead:
            # One datagram per wake-up: a download's peer answers our DATA with one ACK,
            # so udp.Port's second recvfrom (EAGAIN, raised and caught) is pure cost.
            port.maxThroughput = 1
        sock = getattr(port, "socket", port)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self.server.policy.socketBuffer)
            except OSError:
                pass

    def _fileShrankSoon(self) -> None:
        self._reactor.callLater(0, self._fileShrank)  # (called from inside the engine's send)

    def _writeToPeer(self, packet: OutgoingPacket) -> None:
        transport = self.transport
        assert transport is not None  # (listening)
        try:
            # Bytes-like: pairs go only to a DatagramSender's send, which replaces this one.
            transport.write(cast(bytes, packet), self.peer)
        except Exception as e:
            self.log.debug("cannot send to {peer}: {error}", peer=self.peer, error=e)

    def _fileShrank(self) -> None:
        if self.engine is not None:
            self.engine.abort(errors.TFTPError("The file shrank while being sent"))

    # Start

    def begin(self) -> None:
        """Open the file (maybe asynchronously), then start the engine."""
        backend = self.server.backend
        maxDuration = self.server.policy.maxDuration
        if maxDuration is not None:
            self._deadline = self._reactor.callLater(maxDuration, self._tookTooLong)
        d: Deferred[Any]  # fires with the IReader or IWriter
        if self.isRead:
            d = maybeDeferred(backend.openRead, self.request.filename, self.peer)
        else:
            try:
                self.options, self.oack = self._negotiate(None)
                checkUploadSize(self.options.tsize, self.server.policy.limits)
            except TransferTooLarge as e:
                self._refuse(errors.DiskFull(str(e)))
                return
            d = maybeDeferred(
                backend.openWrite, self.request.filename, self.peer, self.options.tsize
            )
        self._opening = d
        d.addCallbacks(self._opened, self._openFailed)

    def _negotiate(self, size: int | None) -> tuple[TransferOptions, dict[str, str]]:
        limits = self.server.policy.limits
        if self.maxBlksize is not None and self.maxBlksize < limits.maxBlksize:
            limits = replace(limits, maxBlksize=self.maxBlksize)
        return negotiateServerOptions(
            self.request.options, isRead=self.isRead, limits=limits, fileSize=size
        )

    def _tookTooLong(self) -> None:
        self._deadline = None
        seconds = self.server.policy.maxDuration
        error = errors.TFTPError(f"Transfer took longer than {seconds:g} s")
        if self.engine is not None:
            self.engine.abort(error)
            return
        if self._ended:
            return
        opening, self._opening = self._opening, None
        self._refuse(error)
        if opening is not None:  # a backend still opening (an origin server's slow answer)
            opening.cancel()

    def _stopDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _opened(self, handle: object) -> None:
        self._opening = None
        if self._ended:
            if self.isRead:
                IReader(handle).close()
            else:
                IWriter(handle).abort()
            return
        settings = self.server.policy.engineSettings()
        if self.isRead:
            self._reader = reader = IReader(handle)
            size = None if self.netascii else reader.size
            self.options, self.oack = self._negotiate(size)
            source: BlockReader = NetasciiReader(reader) if self.netascii else reader
            engine: Sender | Receiver = Sender(
                self._send,
                self._reactor,
                self.options,
                source,
                settings,
                sendsPairs=self._sendsPairs,
                sendWindow=None if self._sender is None else self._sender.sendWindow,
            )
            self.engine = engine
            self._watch(engine)
            engine.start(OptionAck(self.oack).toBytes() if self.oack else None)
        else:
            self._writer = writer = IWriter(handle)
            sink: BlockWriter = writer
            if self.netascii:
                sink = self._netasciiSink = NetasciiWriter(writer)
            engine = Receiver(
                self._send,
                self._reactor,
                self.options,
                sink,
                settings,
                commit=self._commit,
            )
            receiveCoalesced = getattr(self.transport, "receiveCoalesced", None)
            if (
                self.options.windowsize > 1
                and self.server.tracer is None  # a trace reads datagram by datagram
                and receiveCoalesced is not None
            ):
                receiveCoalesced()  # a window of DATA in one read (GRO)
            self.engine = engine
            self._watch(engine)
            # An OACK waits for DATA 1 (ServerPolicy.firstDataWait), maybe nudged with ACK 0.
            engine.start(OptionAck(self.oack).toBytes() if self.oack else encodeAck(0))

    def _commit(self) -> Deferred[None]:
        writer = self._writer
        assert writer is not None
        sink = self._netasciiSink
        if sink is not None:
            d = _whenDone(sink.flush).addCallback(lambda _: _whenDone(writer.finish))
        else:
            d = _whenDone(writer.finish)

        def done(_: None) -> None:
            self._committed = True

        return d.addCallback(done)

    def _openFailed(self, failure: Failure) -> None:
        self._opening = None
        if self._ended:
            return
        error = failure.value
        if not isinstance(error, errors.TFTPError):
            self.log.failure(
                "opening {file} for {peer}", failure, file=self.filename, peer=self.peer
            )
            error = errors.TFTPError("Cannot open file")
        self._refuse(error)

    def _refuse(self, error: errors.TFTPError) -> None:
        self._send(errorPacket(error.code, error.message or type(error).__name__))
        self._ended = True
        # Boot loaders probe for files (pxelinux tries 9 config names): a missing file on
        # a read is routine. Every other refusal is worth a warning.
        routine = self.isRead and isinstance(error, errors.FileNotFound)
        self._logEnd(FAILED, error, level=LogLevel.info if routine else LogLevel.warn)
        self._close()

    def _watch(self, engine: Sender | Receiver) -> None:
        engine.done.addCallbacks(self._succeeded, self._failed)
        engine.finished.addBoth(lambda _: self._close())

    # Packets

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            if addr[0] != self.peer[0] or addr[1] != self.peer[1]:
                self._stray((addr[0], addr[1]))
                return
            engine = self.engine
            if engine is not None:
                engine.datagramReceived(datagram)
        except Exception:
            self.log.failure("handling a packet from {peer}", peer=addr)

    def destinationUnreachable(self, addr: tuple[str, int]) -> None:
        """ICMP port unreachable: if from our client, it is gone (a stray's means nothing)."""
        if addr[0] == self.peer[0] and addr[1] == self.peer[1] and self.engine is not None:
            self.engine.peerUnreachable()

    def _stray(self, addr: tuple[str, int]) -> None:
        """RFC 1350: another TID gets ERROR 5; our transfer goes on undisturbed."""
        if addr[1] == 0 or isUnanswerableSource(addr[0]):
            return
        self.log.debug(
            "stray packet from {source} to the session of {peer}", source=addr, peer=self.peer
        )
        transport = self.transport
        assert transport is not None  # (listening)
        try:
            transport.write(errorPacket(ErrorCode.UNKNOWN_TRANSFER_ID, "Unknown transfer ID"), addr)
        except Exception as e:
            self.log.debug("cannot answer {source}: {error}", source=addr, error=e)

    # Endings

    def abort(self, error: errors.TFTPError) -> None:
        """Stop now (the server stops): tell the peer, release everything; logged as cut."""
        self._cut = True
        if self.engine is not None:
            self.engine.abort(error)
            return
        if self._closed:
            return
        if not self._ended:
            self._ended = True
            self._send(errorPacket(error.code, error.message))
            self._logEnd(CUT, error)
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
        self._close()

    def _succeeded(self, stats: TransferStats) -> None:
        self._ended = True
        self._stopDeadline()
        self.stats = stats
        self.server._transferEnded(self)
        if not self.isRead and not self._closed:
            self.server._startedDallying(self)
        self._release(ok=True)
        if stats.unconfirmed:
            self._logEnd(COMPLETED_UNCONFIRMED, None, reason=stats.unconfirmed)
        else:
            self._logEnd(COMPLETED, None)

    def _failed(self, failure: Failure) -> None:
        self._ended = True
        self.server._transferEnded(self)
        if self.engine is not None:
            self.stats = self.engine.stats
        self._release(ok=False)
        error = failure.value
        if self._cut:
            self._logEnd(CUT, error)
        elif (
            isinstance(error, errors.TFTPError)
            and self.oack
            and self.stats.blocks == 0
            and isinstance(error, errors.OptionNegotiationRefused | errors.RemoteError)
        ):
            # PXE ROMs ask for tsize, then abort after the OACK: normal, not worth a warning.
            self._logEnd(ABORTED_AFTER_OACK, error, level=LogLevel.debug)
        else:
            self._logEnd(FAILED, error)

    def _release(self, ok: bool) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:
                self.log.failure("closing {file}", file=self.filename)
            self._reader = None
        if self._writer is not None:
            if not (ok and self._committed):
                try:
                    self._writer.abort()
                except Exception:
                    self.log.failure("discarding the upload of {file}", file=self.filename)
            self._writer = None

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopDeadline()
        self._release(ok=False)
        if self.transport is not None:
            self.transport.stopListening()
        self.server._sessionClosed(self)

    def _logEnd(
        self,
        outcome: str,
        error: BaseException | None,
        *,
        level: LogLevel | None = None,
        reason: str = "",
    ) -> None:
        """The one event per transfer: stable fields (for observers), and a readable line."""
        stats = self.stats
        if error is not None:
            reason = str(error)
        if level is None:
            level = LogLevel.warn if outcome == FAILED else LogLevel.info
        self.log.emit(
            level,
            "{direction} {file!r} {peer}: {outcome} ({bytes} bytes, {duration:.3f} s, "
            "{retransmits} resent, options {options})" + (": {reason}" if reason else ""),
            service="tftp",
            peer=self.peer,
            file=self.filename,
            direction="RRQ" if self.isRead else "WRQ",
            mode=self.request.mode,
            options=self.oack,
            bytes=stats.bytes,
            blocks=stats.blocks,
            duration=self._reactor.seconds() - self._started,
            retransmits=stats.retransmits,
            outcome=outcome,
            reason=reason,
            tftpTransfer=True,
        )
