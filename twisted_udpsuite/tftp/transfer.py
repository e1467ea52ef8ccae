# -*- test-case-name: tests.tftp.test_transfer -*-
"""
The TFTP block engine shared by the client and the server: no sockets, only callables.

API (stable; the client and the server both build on it)::

    settings = EngineSettings(retries=5, timeout=1.0)  # see ServerPolicy.engineSettings
    sender = Sender(send, clock, options, reader, settings)
    sender.start(initial=None)     # initial: an OACK to send first and hold until ACK 0
    sender.datagramReceived(raw)   # or ackReceived(block) / errorReceived(code, message)
    sender.done                    # Deferred[TransferStats]; fails with errors.TFTPError
    sender.finished                # Deferred[None]: the engine wants no more packets

    receiver = Receiver(send, clock, options, writer, settings, commit=None)
    receiver.start(initial=b"...")  # ACK 0 or an OACK, resent until DATA 1; None if no initial
    receiver.datagramReceived(raw)  # or dataReceived(block, payload) / errorReceived(...)
    receiver.done / receiver.finished  # done fires at the last block; finished after dallying

    engine.abort(error, sendError=True)  # stop now (sends ERROR error.code unless told not to)
    engine.repeatInitial()          # the peer repeated its request: resend the OACK / ACK 0
    engine.peerUnreachable()        # ICMP port unreachable from the peer: it is gone
    sender.peerMovedOn()            # the peer's host asked for another file: end soon

C{send(packet)} writes one datagram to the peer: bytes-like, or, for a L{Sender} with
C{sendsPairs} whose reader offers a C{mapping}, a C{(header, payload)} pair to send as one
datagram (C{sendmsg}). A L{Sender}'s optional C{sendWindow(packets)} sends several at once
(a window in one system call: GSO). C{clock} is an L{IReactorTime}.
C{reader.read(n)} returns up to C{n} bytes (C{b""} at the end) or a Deferred of them; a short
read is topped up before it becomes a (short, final) block. Netascii readers and writers wrap
the local ones (L{twisted_udpsuite.tftp.netascii}). C{writer.write(data)} may return a
Deferred: no ACK goes out until it fires. C{commit()} (optional) runs after the last block is
written and before its ACK, so a failure to publish an upload reaches the peer as an ERROR.

Behaviour: windows per RFC 7440 (the receiver ACKs every C{windowsize} in-order blocks, or at
once on a gap); the sender resends from the first unacknowledged block on a timeout or an ACK
inside the window, and ignores duplicate ACKs (RFC 1123: no Sorcerer's Apprentice). The
retransmission timeout follows the measured round trip (SRTT + 4 RTTVAR, as TCP) within
[L{MIN_RTO}, the negotiated or given timeout], doubling on each retry (a sender's up to
L{QUIET_GAP}). Block numbers wrap after 65535 to C{rollover} (0 or 1) when sending
(L{twisted_udpsuite.tftp.wire.wrapBlock}); the receiver accepts either. Sending ERRORs for
timeouts is left out (the peer is gone); every other failure sends one. A receiver's re-ACK
timer starts from its own C{timeout}, not the negotiated one (that is the peer's resend
interval), and no round trip is sampled from an exchange in which either side resent
(Karn's rule). When a window stops short (its tail
lost) the receiver's timer ACKs the last block it has (RFC 7440 §4), not the previous ACK.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.options import DEFAULT_BLKSIZE, TransferOptions
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    MalformedPacket,
    Opcode,
    OptionAck,
    Packet,
    parsePacket,
    wrapBlock,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MIN_RTO",
    "OACK_QUIET",
    "QUIET_GAP",
    "BlockReader",
    "BlockWriter",
    "Commit",
    "EngineSettings",
    "OutgoingPacket",
    "Receiver",
    "Send",
    "SendWindow",
    "Sender",
    "TransferStats",
    "errorPacket",
]

DEFAULT_TIMEOUT = 1.0
"""Largest retransmission timeout (seconds) when the peer did not negotiate C{timeout}."""
MIN_RTO = 0.05
"""Smallest retransmission timeout: below this, scheduler jitter would cause false resends."""
QUIET_GAP = 8.0
"""Once its peer has answered, a L{Sender}'s resends of the same packet keep doubling up to
at least this many seconds, past the negotiated or given timeout (a peer that never answered
keeps that cap: a spoofed request holds a session no longer). Some receivers answer a
repeated DATA only once and then only on their own timer, which every packet they ignore
restarts (Debian's atftp 0.8: 5 s): resends capped at 1 s would keep it from ever firing."""

OACK_QUIET = 12.0
"""Seconds an unanswered OACK of a download waits before we send it again ourselves.
atftp (0.8) aborts a download on any second OACK ("unexpected OACK"), and while its ACK 0
is lost it resends that ACK after each 5 s of silence: an OACK of ours before its second
resend (10 s) kills the download when two ACK 0s in a row are lost (1% at 10% loss; after
12 s, three: 0.1%). A client whose OACK was lost repeats its request, which
L{Sender.repeatInitial} answers at once; so only a client that waits long to resend a lost
ACK 0 needs our resend: curl, after 72 s (with no --max-time). No other packet is safe
instead: DATA 1 without a received OACK is taken for "options refused" and read into a
512-byte buffer (atftp truncates every block of a larger blksize)."""

_HEADER = struct.Struct("!HH")
_pack = _HEADER.pack
_unpack = _HEADER.unpack_from
_DATA = int(Opcode.DATA)
_ACK = int(Opcode.ACK)
_OACK_OPCODE = struct.pack("!H", Opcode.OACK)
_LARGE_BLOCK = 4096
"""From this blksize on, blocks are sent from a reader's mapping or read into their packet:
below it, the Python calls per block cost more than the copies they save."""


def errorPacket(code: int, message: str) -> bytes:
    """An ERROR datagram (never raises: unknown codes and odd text are fine)."""
    return Error(int(code) & 0xFFFF, message.replace("\0", " ")).toBytes()


@dataclass
class TransferStats:
    """
    What a transfer moved. C{bytes} counts wire payload (netascii-encoded in that mode);
    C{retransmits} counts packets sent again (DATA, ACK or the initial OACK/ACK 0).
    A L{Sender} that ended without its final ACK (L{EngineSettings.finalResends},
    L{Sender.peerMovedOn}, L{_Engine.peerUnreachable}) counts the unconfirmed blocks too.
    """

    bytes: int = 0
    blocks: int = 0
    retransmits: int = 0
    duration: float = 0.0
    unconfirmed: str = ""
    """Why the final ACK never came though every block was sent ("": it came)."""


@dataclass(frozen=True)
class EngineSettings:
    """
    How an engine retries, waits and ends: built by the client from its arguments, and by
    the server from its policy (L{twisted_udpsuite.tftp.server.ServerPolicy.engineSettings}).
    Each engine reads the fields that concern its direction.

    @ivar retries: Resends of an unanswered packet before the transfer fails.
    @ivar timeout: Largest retransmission timeout (s) when the peer negotiated none; a
        L{Receiver}'s re-ACK timer starts from it even when the peer did.
    @ivar rollover: The block number a L{Sender} sends after 65535 (0, as most peers, or 1).
    @ivar unansweredRetries: Retry budget until the peer first answers (C{None}:
        C{retries}). A server lowers it: every resend to a spoofed source is reflection
        traffic.
    @ivar finalResends: Resends of a L{Sender}'s last window, with no word from the peer,
        after which the transfer ends as done but unconfirmed
        (L{TransferStats.unconfirmed}); C{None}: the retry budget, then a failure. A server
        sets it: iPXE, pxelinux and curl close their port as soon as they have sent the
        final ACK, so a lost final ACK is never resent and the last block's resends go
        nowhere. A peer that has not got the last window says so (it repeats its ACK of the
        block before it) and gets the whole budget.
    @ivar dally: How long a L{Receiver} stays after its last ACK to answer a repeated last
        DATA (C{None}: its largest backed-off timeout).
    @ivar firstDataWait: With an OACK as the initial packet, how long (s) a L{Receiver}
        waits silently for DATA 1, never resending the OACK on its timer (only
        L{Receiver.repeatInitial}, for a repeated request, sends it again and restarts the
        wait); C{None}: the OACK is resent on the timer like any packet. curl takes every
        OACK for a go-ahead and reads its next chunk into block 1, so an OACK resent while
        its DATA 1 is lost stores the file without its first block; and it resends a lost
        DATA 1 only on its own per-block timer (72 s with no C{--max-time}).
    @ivar nudges: During C{firstDataWait}, where the OACK granted only the defaults
        (blksize 512, windowsize 1), ACK 0s sent at most this many times on the
        retransmission timer instead: it means the same to a client as that OACK, curl
        answers it by resending DATA 1 at once, and a client whose OACK was lost takes it
        for "options refused" and goes on with the defaults, which is what was granted.
    @ivar repeatFinalAck: A L{Receiver} sends its final ACK once more, unasked, after a
        round trip or two: a lost final ACK costs curl a 72 s wait (it resends the last
        DATA only on its own timer).
    """

    retries: int = 5
    timeout: float = DEFAULT_TIMEOUT
    rollover: int = 0
    unansweredRetries: int | None = None
    finalResends: int | None = None
    dally: float | None = None
    firstDataWait: float | None = None
    nudges: int = 0
    repeatFinalAck: bool = False

    def __post_init__(self) -> None:
        if self.rollover not in (0, 1):
            raise ValueError("rollover must be 0 or 1")


OutgoingPacket: TypeAlias = "bytes | bytearray | tuple[bytes, memoryview]"
"""A datagram to send: bytes-like, or a C{(header, payload)} pair sent as one (C{sendmsg})."""

Send: TypeAlias = Callable[[OutgoingPacket], None]
"""C{send(packet)}: writes one datagram to the peer."""

SendWindow: TypeAlias = Callable[[Sequence[OutgoingPacket]], None]
"""C{sendWindow(packets)}: writes several datagrams to the peer at once."""

Commit: TypeAlias = Callable[[], "Deferred[None] | None"]
"""C{commit()}: publishes a received file; may return a Deferred."""


class BlockReader(Protocol):
    """What a L{Sender} reads the file from (wire bytes)."""

    def read(self, n: int) -> bytes | Deferred[bytes]:
        """Up to C{n} bytes, C{b""} at the end, or a Deferred of them."""


class BlockWriter(Protocol):
    """What a L{Receiver} writes the file to (wire bytes)."""

    def write(self, data: bytes) -> None | Deferred[None]:
        """Write C{data}; a Deferred holds the next ACK back until it fires."""


class _Rto:
    """Retransmission timeout from measured round trips (RFC 6298 arithmetic)."""

    __slots__ = ("srtt", "rttvar", "maximum", "ceiling", "rto")

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.ceiling = maximum  # the largest backed-off timeout
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = maximum

    def sample(self, rtt: float) -> None:
        if rtt < 0:
            return
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        # min(maximum, max(MIN_RTO, ...)) without the two calls: this runs on every ACK.
        rto = self.srtt + 4 * self.rttvar
        self.rto = MIN_RTO if rto < MIN_RTO else self.maximum if rto > self.maximum else rto

    def backoff(self, tries: int) -> float:
        return min(self.ceiling, self.rto * 2.0**tries)


def _caught() -> Failure:
    """The exception being handled, as a Failure (Twisted leaves C{Failure()} unannotated)."""
    return Failure()  # type: ignore[no-untyped-call]


def _ioError(failure: Failure) -> errors.TFTPError:
    """The TFTP error to send for a reader's, writer's or commit's failure."""
    value = failure.value
    if isinstance(value, errors.TFTPError):
        return value
    if isinstance(value, OSError):
        return errors.errorForOSError(value, "I/O error")
    return errors.TFTPError(f"I/O error: {value}")


class _Engine:
    """Timers, ending and ERROR handling common to L{Sender} and L{Receiver}."""

    log = Logger()

    def __init__(
        self,
        send: Send,
        clock: IReactorTime,
        options: TransferOptions,
        settings: EngineSettings,
    ) -> None:
        self._send = send
        self._clock = clock
        self.options = options
        self.settings = settings
        maximum = float(options.timeout) if options.timeout else float(settings.timeout)
        self._rto = _Rto(max(maximum, MIN_RTO))
        self.stats = TransferStats()
        self.done: Deferred[TransferStats] = Deferred()
        self.finished: Deferred[None] = Deferred()
        self._timer: IDelayedCall | None = None
        self._deadline = 0.0
        self._tries = 0
        self._heard = False
        self._started = clock.seconds()
        self._over = False
        self._closed = False

    # Timer: one DelayedCall, moved lazily (a deadline), so the hot path never reschedules.

    def _arm(self, delay: float, now: float | None = None) -> None:
        deadline = self._deadline = (self._clock.seconds() if now is None else now) + delay
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(delay, self._timerFired)
        elif deadline < timer.getTime():
            timer.reset(delay)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timerFired(self) -> None:
        self._timer = None
        remaining = self._deadline - self._clock.seconds()
        if remaining > 1e-9:
            self._timer = self._clock.callLater(remaining, self._timerFired)
            return
        self._timedOut()

    def _timedOut(self) -> None:
        raise NotImplementedError

    def _retry(self) -> bool:
        """Count one more retry; False (and the transfer failed) when the budget is spent."""
        settings = self.settings
        budget = settings.retries
        if not self._heard and settings.unansweredRetries is not None:
            budget = min(budget, settings.unansweredRetries)
        if self._tries >= budget:
            self._fail(
                errors.TransferTimeout(f"no answer after {self._tries + 1} tries"),
                sendError=False,
            )
            return False
        self._tries += 1
        self.stats.retransmits += 1
        return True

    # Packets common to both directions

    def datagramReceived(self, datagram: bytes) -> None:
        """Feed one datagram from the peer (already checked to come from its TID)."""
        if self._over:
            self._lateDatagram(datagram)
            return
        if len(datagram) >= 4:
            opcode, number = _unpack(datagram)
            if opcode == self._hotOpcode:
                self._hot(number, datagram)
                return
        try:
            packet = parsePacket(datagram)
        except MalformedPacket as e:
            self.log.debug("ignoring a malformed packet: {error}", error=e)
            return
        self.packetReceived(packet)

    _hotOpcode = 0

    def _hot(self, number: int, datagram: bytes) -> None:
        raise NotImplementedError

    def _lateDatagram(self, datagram: bytes) -> None:
        pass

    def packetReceived(self, packet: Packet) -> None:
        """Feed one parsed packet (for owners that parse before routing)."""
        if self._over:
            if isinstance(packet, Data):
                self._lateDatagram(Data(packet.block, packet.data).toBytes())
            return
        if isinstance(packet, Error):
            self.errorReceived(int(packet.code), packet.message)
        elif isinstance(packet, Ack):
            self._packetAck(packet.block)
        elif isinstance(packet, Data):
            self._packetData(packet.block, packet.data)
        elif isinstance(packet, OptionAck):
            self._packetOack()
        else:
            self.log.debug("ignoring {kind} during a transfer", kind=type(packet).__name__)

    def _packetAck(self, block: int) -> None:
        pass

    def _packetData(self, block: int, payload: bytes) -> None:
        pass

    def _packetOack(self) -> None:
        pass

    def errorReceived(self, code: int, message: str) -> None:
        """The peer gave up: stop at once, without answering (RFC 1350)."""
        if self._over:
            return
        self._fail(errors.errorFor(Error(code & 0xFFFF, message)), sendError=False)

    # Endings

    def peerUnreachable(self) -> None:
        """
        ICMP port unreachable came back from the peer: its port is closed, no packet of
        ours can reach it any more. Fail now, without an ERROR (nobody would read it).
        """
        if self._over:
            self._close()
            return
        self._fail(
            errors.TransferTimeout("the peer's port is closed (ICMP port unreachable)"),
            sendError=False,
        )

    def abort(self, error: errors.TFTPError, sendError: bool = True) -> None:
        """
        Stop the transfer from outside (cancel, shutdown): fails C{done} with C{error}, or, if
        it already succeeded and is only dallying, stops dallying.
        """
        if self._over:
            self._close()
            return
        self._fail(error, sendError=sendError)

    def _ioFailed(self, failure: Failure, doing: str) -> None:
        """The reader or writer failed: end with the matching ERROR. Its own errors (a file
        gone unreadable, a full disk, an origin that failed) are said by the transfer's end
        line; anything else is a bug in it, logged with its traceback."""
        if not isinstance(failure.value, (errors.TFTPError, OSError)):
            self.log.failure("{doing} the file failed", failure, doing=doing)
        self._fail(_ioError(failure), sendError=True)

    def _fail(self, error: errors.TFTPError, *, sendError: bool) -> None:
        if self._over:
            return
        if sendError:
            self._send(errorPacket(error.code, error.message or type(error).__name__))
        self._end()
        self.done.errback(error)
        self._close()

    def _end(self) -> None:
        self._over = True
        self._disarm()
        self.stats.duration = self._clock.seconds() - self._started

    def _succeed(self) -> None:
        self._end()
        self.done.callback(self.stats)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._over = True
        self._disarm()
        self.finished.callback(None)


class Sender(_Engine):
    """
    Sends a file as DATA blocks (a download on the server, an upload on the client).

    @param reader: Already in wire form (see
        L{twisted_udpsuite.tftp.netascii.NetasciiReader}).
    @param sendsPairs: C{send} also takes C{(header, payload)} pairs, sent as one datagram
        with the kernel copying the payload (C{sendmsg}): only then is a reader's
        C{mapping} used. Copying a mapping in Python is not safe (a file that shrinks
        under it raises C{SIGBUS}); the kernel's copy fails with C{EFAULT} instead.
    @param sendWindow: C{sendWindow(packets)} sends several packets (as C{send} takes
        them) at once, all of one length but the last: a window in one system call
        (L{twisted_udpsuite.tftp.batching.DatagramSender.sendWindow}). With it and
        C{sendsPairs}, a windowed transfer sends from the mapping at any block size.
    """

    _hotOpcode = _ACK

    def __init__(
        self,
        send: Send,
        clock: IReactorTime,
        options: TransferOptions,
        reader: BlockReader,
        settings: EngineSettings = EngineSettings(),
        *,
        sendsPairs: bool = False,
        sendWindow: SendWindow | None = None,
    ) -> None:
        super().__init__(send, clock, options, settings)
        self._reader = reader
        self._sendWindow = sendWindow
        # Large blocks, or windows sent in batches: if send() takes (header, payload) pairs
        # (sendsPairs), a file mapping (optional on readers) is sent from by the kernel
        # without a copy; else a synchronous readinto() (also optional) reads each large
        # block straight into its packet.
        large = options.blksize >= _LARGE_BLOCK
        batched = sendWindow is not None and options.windowsize > 1
        mapping = getattr(reader, "mapping", None) if (large or batched) and sendsPairs else None
        self._mapping: memoryview | None = mapping
        self._readinto = getattr(reader, "readinto", None) if large else None
        self._rollover = settings.rollover
        self._blksize = options.blksize
        self._windowsize = options.windowsize
        # Block numbers inside the engine are absolute (1, 2, ... past 65535); _base is the
        # first unacknowledged one and _window holds the packets from _base that were built.
        self._base = 1
        self._ackedWire = 0  # wire number of block _base - 1
        self._window: list[OutgoingPacket] = []
        self._lastLength = 0  # payload length of the final block, once built
        self._sent = 0  # how many of _window have been sent at least once
        self._eof = False  # the final (short) block is in _window
        self._reading = False
        self._initial: bytes | None = None
        self._sentAt = 0.0
        self._clean = True  # nothing resent since _sentAt: the next ACK is a valid RTT sample
        self._stillWaiting = False  # the peer asked again for a block before the last window
        self._probing = False  # peerMovedOn: one last resend, then the end

    def start(self, initial: bytes | None = None) -> None:
        """
        Begin: send C{initial} (an OACK, answered by ACK 0) first if given, else DATA 1.
        """
        if initial is not None:
            self._initial = initial
            self._base = 1
            self._sentAt = self._clock.seconds()
            self._send(initial)
            self._arm(self._oackWait())
            return
        self._fill()

    def _oackWait(self) -> float:
        """
        How long an unanswered OACK waits before we send it again (L{OACK_QUIET}).
        """
        return max(self._rto.backoff(self._tries), OACK_QUIET)

    # Reading blocks

    def _fill(self) -> None:
        """Build packets until the window is full (or the file ends), then send the unsent."""
        reader = self._reader
        blksize = self._blksize
        window = self._window
        readinto = self._readinto
        mapping = self._mapping
        if mapping is not None:
            # The hot path of a download: each block a header and a slice of the mapping.
            absolute = self._base + len(window)
            start = (absolute - 1) * blksize
            rollover = self._rollover
            for _ in range(0 if self._eof else self._windowsize - len(window)):
                payload = mapping[start : start + blksize]
                number = absolute & 0xFFFF if rollover == 0 else wrapBlock(absolute, rollover)
                window.append((_pack(_DATA, number), payload))
                if len(payload) < blksize:
                    self._eof = True
                    self._lastLength = len(payload)
                    break
                absolute += 1
                start += blksize
            self._flush()
            return
        while not self._eof and len(window) < self._windowsize and not self._reading:
            if readinto is not None:
                packet = self._readPacket(readinto)
                if packet is None:
                    return
                window.append(packet)
                continue
            try:
                chunk = reader.read(blksize)
            except Exception:
                self._readFailed(_caught())
                return
            # Deferred is an ABC (Awaitable): isinstance() on each block's bytes is slow.
            if type(chunk) is not bytes and isinstance(chunk, Deferred):
                self._reading = True
                chunk.addCallbacks(self._readDone, self._readFailed, callbackArgs=(b"",))
                break
            if len(chunk) < blksize and chunk:
                topped = self._topUp(chunk)
                if topped is None:
                    return
                chunk = topped
            self._addBlock(chunk)
            if self._over:
                return
        self._flush()

    def _readPacket(self, readinto: Callable[[memoryview], int | None]) -> bytearray | None:
        """Large blocks: read straight into the packet buffer (one copy instead of three)."""
        blksize = self._blksize
        packet = bytearray(4 + blksize)
        view = memoryview(packet)
        got = 0
        try:
            while got < blksize:
                n = readinto(view[4 + got :])
                if not n:
                    break
                got += n
        except Exception:
            view.release()
            self._readFailed(_caught())
            return None
        view.release()
        number = wrapBlock(self._base + len(self._window), self._rollover)
        _HEADER.pack_into(packet, 0, _DATA, number)
        if got < blksize:
            del packet[4 + got :]
            self._eof = True
            self._lastLength = got
        return packet

    def _topUp(self, chunk: bytes) -> bytes | None:
        """A short read before the end: keep reading until a whole block or EOF."""
        while len(chunk) < self._blksize:
            try:
                more = self._reader.read(self._blksize - len(chunk))
            except Exception:
                self._readFailed(_caught())
                return None
            if isinstance(more, Deferred):
                self._reading = True
                more.addCallbacks(self._readDone, self._readFailed, callbackArgs=(chunk,))
                return None
            if not more:
                break
            chunk += more
        return chunk

    def _readDone(self, chunk: bytes, before: bytes) -> None:
        self._reading = False
        if self._over:
            return
        if before:
            if chunk:
                chunk = before + chunk
                if len(chunk) < self._blksize:
                    topped = self._topUp(chunk)
                    if topped is None:
                        return
                    chunk = topped
            else:
                chunk = before
        elif chunk and len(chunk) < self._blksize:
            topped = self._topUp(chunk)
            if topped is None:
                return
            chunk = topped
        self._addBlock(chunk)
        self._fill()

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if self._over:
            return
        self._ioFailed(failure, "reading")

    def _addBlock(self, chunk: bytes) -> None:
        if len(chunk) > self._blksize:
            self._fail(errors.TFTPError("reader returned too much"), sendError=True)
            return
        absolute = self._base + len(self._window)
        number = absolute & 0xFFFF if self._rollover == 0 else wrapBlock(absolute, self._rollover)
        self._window.append(_pack(_DATA, number) + chunk)
        if len(chunk) < self._blksize:
            self._eof = True
            self._lastLength = len(chunk)

    def _flush(self) -> None:
        """Send the built packets not sent yet."""
        if self._over:
            return
        window = self._window
        sent = self._sent
        count = len(window)
        if sent < count:
            now = self._clock.seconds()
            if sent == 0:
                self._sentAt = now
                self._clean = True
            if count - sent == 1:
                self._send(window[sent])
            elif self._sendWindow is not None:
                self._sendWindow(window[sent:count])
            else:
                send = self._send
                for index in range(sent, count):
                    send(window[index])
            self._sent = count
            self._arm(self._rto.backoff(self._tries) if self._tries else self._rto.rto, now)

    # ACKs

    def _packetAck(self, block: int) -> None:
        self.ackReceived(block)

    def ackReceived(self, block: int) -> None:
        """An ACK: advance the window, or resend from inside it; ignore anything else."""
        self._hot(block, b"")

    def _hot(self, block: int, datagram: bytes) -> None:
        """L{ackReceived}'s work, called straight by L{datagramReceived} for a raw ACK."""
        if self._over:
            return
        if self._initial is not None:
            if block == 0:
                if self._clean:
                    self._rto.sample(self._clock.seconds() - self._sentAt)
                self._initial = None
                self._tries = 0
                self._heard = True
                self._disarm()
                self._fill()
            return
        # How many blocks this ACK covers, counted from the last one acknowledged (16-bit).
        if self._rollover == 0:
            offset = (block - self._ackedWire) & 0xFFFF
        else:
            offset = ((block - 1) % 65535 - (self._ackedWire - 1) % 65535) % 65535
        if offset == 0 or offset > self._sent:
            # A duplicate (Sorcerer's Apprentice) or nonsense: the timer decides. A repeated
            # ACK of the block before the window is the peer saying it still waits for it.
            if offset == 0 and self._eof:
                self._stillWaiting = True
                if self._probing:  # it did not move on after all: resend as usual
                    self._probing = False
                    self._arm(self._rto.backoff(self._tries))
            return
        if self._clean:
            self._rto.sample(self._clock.seconds() - self._sentAt)
        window = self._window
        stats = self.stats
        # Every block is full but the final one, whose shortfall is taken off at the end.
        stats.bytes += offset * self._blksize
        if offset == 1:
            del window[0]
        else:
            del window[:offset]
        self._ackedWire = block
        self._sent -= offset
        self._base += offset
        self._tries = 0
        self._stillWaiting = self._probing = False
        self._heard = True
        stats.blocks += offset
        if self._eof and not window:
            stats.bytes -= self._blksize - self._lastLength
            self._succeed()
            self._close()
            return
        if self._sent:
            # An ACK inside the window (RFC 7440): resend from the first unacknowledged block.
            self._sent = 0
            stats.retransmits += len(window)
        self._fill()

    def _packetOack(self) -> None:
        pass  # a repeated OACK (client upload): our DATA 1 or its resend answers it

    def repeatInitial(self) -> None:
        """The peer repeated its request: resend the OACK if it is still unanswered."""
        if not self._over and self._initial is not None:
            self.stats.retransmits += 1
            self._clean = False
            self._send(self._initial)
            self._arm(self._oackWait())  # (a later deadline: the timer moves lazily)

    # The last window

    def _lastWindowOut(self) -> bool:
        """Every block has been sent; only the final ACK is missing."""
        return self._eof and self._initial is None and self._sent == len(self._window) > 0

    def peerMovedOn(self) -> None:
        """
        The peer's host sent us a request for another file: a boot loader that got our
        last block and whose final ACK was lost has moved on. Resend the last window once
        and end, done but unconfirmed, unless an answer comes within a round trip (two
        RTOs): a client of the same host that really lost our last block (several clients
        behind one address) gets it again instead of a closed port.
        """
        if self._over or not self._heard or not self._lastWindowOut() or self._probing:
            return
        self._probing = True
        self._clean = False
        self._resendWindow()
        self._disarm()
        self._arm(2 * self._rto.rto)

    def peerUnreachable(self) -> None:
        """The peer's port is closed: with every block sent, it got them and left."""
        if not self._over and self._heard and self._lastWindowOut():
            self._endUnconfirmed("the client's port closed (ICMP port unreachable)")
            return
        super().peerUnreachable()

    def _endUnconfirmed(self, why: str) -> None:
        stats = self.stats
        count = len(self._window)
        stats.blocks += count
        stats.bytes += (count - 1) * self._blksize + self._lastLength
        stats.unconfirmed = why
        del self._window[:]
        self._sent = 0
        self._succeed()
        self._close()

    def _close(self) -> None:
        # Let go of the packets and of the reader's mapping before the session hears we are
        # done (finished): the session and the engine refer to each other, so they go only
        # when a garbage collection finds them, and until then the slices held here would
        # keep the file mapped and its descriptor open (an idle server would keep them all).
        if not self._closed:
            del self._window[:]
            self._sent = 0
            self._initial = None
            self._mapping = None
        super()._close()

    def _resendWindow(self) -> None:
        window = self._window
        if self._sendWindow is not None and self._sent > 1:
            self._sendWindow(window[: self._sent])
        else:
            send = self._send
            for index in range(self._sent):
                send(window[index])
        self.stats.retransmits += self._sent

    def _timedOut(self) -> None:
        if self._probing:
            self._endUnconfirmed("the client moved on to another file")
            return
        finalResends = self.settings.finalResends
        if (
            finalResends is not None
            and self._heard
            and not self._stillWaiting
            and self._lastWindowOut()
            and self._tries >= finalResends
        ):
            self._endUnconfirmed(f"no final ACK after {self._tries} resends")
            return
        if not self._retry():
            return
        if self._heard:
            # A peer that answered before: back off far enough for one that waits for quiet.
            self._rto.ceiling = max(self._rto.maximum, QUIET_GAP)
        if self._initial is not None:
            self._clean = False
            self._send(self._initial)
            self._arm(self._oackWait())
            return
        if not self._sent:
            # Waiting for a slow reader, not for the peer: no retry is spent.
            self._tries -= 1
            self.stats.retransmits -= 1
            self._arm(self._rto.rto)
            return
        # Resend the whole outstanding window from its first block.
        self._clean = False
        self._resendWindow()
        self.stats.retransmits -= min(self._sent, 1)  # _retry() counted one already
        self._arm(self._rto.backoff(self._tries))


class Receiver(_Engine):
    """
    Receives a file as DATA blocks (an upload on the server, a download on the client).

    @param writer: Given wire bytes (see
        L{twisted_udpsuite.tftp.netascii.NetasciiWriter}).
    @param commit: called once after the last block is written and before its ACK; may
        return a Deferred; an exception becomes an ERROR to the peer.
    @param writesAtOnce: the writer never returns a Deferred, so a window read whole
        (L{windowReceived}) may be ACKed before it is written.
    """

    _hotOpcode = _DATA

    def __init__(
        self,
        send: Send,
        clock: IReactorTime,
        options: TransferOptions,
        writer: BlockWriter,
        settings: EngineSettings = EngineSettings(),
        *,
        commit: Commit | None = None,
        writesAtOnce: bool = False,
    ) -> None:
        super().__init__(send, clock, options, settings)
        timeout = settings.timeout
        self._writesAtOnce = writesAtOnce
        # The negotiated timeout is how long the *peer* waits before it resends (curl asks
        # for 5 or 6 s), not a round trip: our re-ACK timer starts from our own timeout and
        # follows measured round trips. Only its backoff may grow to the peer's interval, so
        # a peer that is silent that long (a slow source) is not given up on sooner.
        self._rto = _Rto(max(float(timeout), MIN_RTO))
        self._rto.ceiling = max(self._rto.maximum, float(options.timeout or 0))
        self._writer = writer
        self._commit = commit
        self._blksize = options.blksize
        self._windowsize = options.windowsize
        self._dally = self._rto.ceiling if settings.dally is None else settings.dally
        self._next = 1  # absolute number of the block expected next
        self._scheme: int | None = None  # rollover seen from the peer: 0, 1 or unknown
        self._wrapGap = False
        self._inWindow = 0  # in-order blocks since the last ACK
        self._lastAck = b""
        self._ackedAt = 0.0
        self._fresh = False  # the last ACK was sent once: the next DATA is an RTT sample
        self._gapAcked = False
        self._busy = False  # a write (or commit) is in progress: incoming DATA is dropped
        self._finalAck: bytes | None = None
        self._initialPacket: bytes | None = None
        self._patience: float | None = None
        self._waitUntil = 0.0  # with patience: when the wait for DATA 1 ends
        self._nudge: bytes | None = None
        self._nudgesLeft = 0
        self._finalAgain: IDelayedCall | None = None

    def start(self, initial: bytes | None = None) -> None:
        """
        Begin: send C{initial} (ACK 0 or an OACK), resent until DATA 1 comes; with C{None}
        (a client whose DATA 1 already arrived) just wait for L{dataReceived}. An OACK
        waits for DATA 1 as L{EngineSettings.firstDataWait} and L{EngineSettings.nudges}
        say.
        """
        if initial is not None:
            self._initialPacket = initial
            self._sendAck(initial)
            wait = self.settings.firstDataWait
            if wait is not None and initial[:2] == _OACK_OPCODE:
                self._patience = wait
                self._waitUntil = self._clock.seconds() + wait
                options = self.options
                if options.blksize == DEFAULT_BLKSIZE and options.windowsize == 1:
                    # Granted only the defaults: ACK 0 means the same as the OACK.
                    self._nudge, self._nudgesLeft = _pack(_ACK, 0), self.settings.nudges
                self._fresh = False  # DATA 1 may be the peer's own late resend: no RTT sample
                self._arm(self._nextWait())
        else:
            self._lastAck = _pack(_ACK, 0)
            self._ackedAt = self._clock.seconds()
            self._arm(self._rto.backoff(0) * 2)

    def _nextWait(self) -> float:
        """Waiting for DATA 1 with patience: until the next nudge, or the end of the wait."""
        remaining = self._waitUntil - self._clock.seconds()
        if self._nudgesLeft:
            # No round trip measured yet, and the RTO starts at the peer's timeout (curl
            # asks for 6 s): a second, doubling, is long enough for any DATA 1 to arrive.
            return min(2 * self._rto.backoff(self._tries), 2.0**self._tries, remaining)
        return remaining

    def _sendAck(self, packet: bytes) -> None:
        self._lastAck = packet
        self._ackedAt = self._clock.seconds()
        self._fresh = True
        self._inWindow = 0
        self._send(packet)
        self._arm(2 * self._rto.backoff(self._tries))

    # DATA

    def _hot(self, number: int, datagram: bytes) -> None:
        self.dataReceived(number, datagram[4:])

    def _packetData(self, block: int, payload: bytes) -> None:
        self.dataReceived(block, payload)

    def _packetOack(self) -> None:
        # A repeated OACK (client download): our ACK 0 was lost.
        if self._next == 1 and self._lastAck:
            self.stats.retransmits += 1
            self._send(self._lastAck)

    def _classify(self, block: int) -> int:
        """0: the expected block; >0: ahead (a gap); <0: old (a duplicate)."""
        expected = self._next
        if expected >= 65536 and self._scheme is None and expected % 65536 == 0:
            # First wrap: the peer may go to 0 or to 1.
            if block == 0:
                self._scheme = 0
                return 0
            if block == 1 and (self._windowsize == 1 or self._wrapGap):
                self._scheme = 1
                return 0
            if block == 1:
                self._wrapGap = True
                return 1
        scheme = self._scheme or 0
        want = wrapBlock(expected, scheme)
        if block == want:
            return 0
        cycle = 65535 if scheme == 1 and expected >= 65536 else 65536
        if scheme == 1 and expected >= 65536:
            delta = ((block - 1) - (want - 1)) % cycle
        else:
            delta = (block - want) % cycle
        return delta if delta < cycle // 2 else -1

    def windowReceived(self, datagrams: Sequence[bytes | memoryview]) -> None:
        """
        Several datagrams from the peer read at once (a coalesced read, GRO). When they are
        the next full blocks in order, within the current window, and the writer writes at
        once, they are taken as one: one write of their payloads, and when they end the
        window its ACK goes out I{before} the write, so the sender sends the next window
        while we write this one and the two sides overlap instead of taking turns.
        Anything else (a short final block, a gap, a duplicate, the first wrap) is fed one
        datagram at a time.
        """
        count = len(datagrams)
        remaining = self._windowsize - self._inWindow
        if not self._writesAtOnce or self._over or self._busy or count > remaining:
            self._eachReceived(datagrams)
            return
        first = self._next
        scheme = self._scheme
        if scheme is None and first + count > 65536:
            self._eachReceived(datagrams)  # the first wrap: let _classify learn the scheme
            return
        size = 4 + self._blksize
        rollover = scheme or 0
        number = first
        for datagram in datagrams:
            if len(datagram) != size or _unpack(datagram) != (
                _DATA,
                wrapBlock(number, rollover),
            ):
                self._eachReceived(datagrams)
                return
            number += 1
        if self._fresh:
            self._rto.sample(self._clock.seconds() - self._ackedAt)
            self._fresh = False
        self._gapAcked = False
        self._tries = 0
        self._heard = True
        self._next = number
        stats = self.stats
        stats.blocks += count
        stats.bytes += count * self._blksize
        if count == remaining:
            self._sendAck(_pack(_ACK, wrapBlock(number - 1, rollover)))
        else:
            self._inWindow += count
            self._arm(2 * self._rto.backoff(0))
        try:
            written = self._writer.write(b"".join([datagram[4:] for datagram in datagrams]))
        except Exception:
            self._writeFailed(_caught())
            return
        if written is not None and isinstance(written, Deferred):
            written.addErrback(self._writeFailed)  # (not expected of such a writer)

    def _eachReceived(self, datagrams: Sequence[bytes | memoryview]) -> None:
        for datagram in datagrams:
            self.datagramReceived(bytes(datagram))

    def dataReceived(self, block: int, payload: bytes) -> None:
        """A DATA block: write it if it is the next one; ACK per window, gap or duplicate."""
        if self._over:
            return
        if self._busy:
            return  # the peer will resend; ACKs wait for the writer
        if len(payload) > self._blksize:
            self._fail(
                errors.ProtocolError(f"DATA of {len(payload)} bytes exceeds blksize"),
                sendError=True,
            )
            return
        kind = self._classify(block)
        if kind:
            if self._windowsize == 1 and kind < 0:
                self._duplicate()
            elif not self._gapAcked:
                self._gapAcked = True
                self.stats.retransmits += 1
                self._sendAck(_pack(_ACK, wrapBlock(self._next - 1, self._scheme or 0)))
                self._fresh = False  # what answers it is the peer's resend (Karn)
            return
        if self._fresh:
            self._rto.sample(self._clock.seconds() - self._ackedAt)
            self._fresh = False
        self._gapAcked = False
        self._tries = 0
        self._heard = True
        self._next += 1
        stats = self.stats
        stats.blocks += 1
        stats.bytes += len(payload)
        final = len(payload) < self._blksize
        try:
            written = self._writer.write(payload) if payload else None
        except Exception:
            self._writeFailed(_caught())
            return
        if written is not None and isinstance(written, Deferred):  # (an ABC: slow isinstance)
            self._busy = True
            written.addCallbacks(self._written, self._writeFailed, callbackArgs=(block, final))
            return
        self._afterWrite(block, final)

    def _duplicate(self) -> None:
        """
        Lock-step, a block we have ACKed came again: our ACK was lost, so send it again,
        unless this copy left the peer before our ACK could have reached it. curl resends
        DATA on every out-of-date ACK (a Sorcerer's Apprentice sender): answering such a
        copy as well would double every packet from then on.
        """
        srtt = self._rto.srtt
        now = self._clock.seconds()
        if srtt is not None and now - self._ackedAt < srtt:
            return
        self._fresh = False  # the next DATA may answer either copy (Karn)
        self._ackedAt = now
        self.stats.retransmits += 1
        self._send(self._lastAck)

    def _written(self, _: object, block: int, final: bool) -> None:
        self._busy = False
        if not self._over:
            self._afterWrite(block, final)

    def _writeFailed(self, failure: Failure) -> None:
        self._busy = False
        if self._over:
            return
        self._ioFailed(failure, "writing")

    def _afterWrite(self, block: int, final: bool) -> None:
        if final:
            self._finishing(block)
            return
        self._inWindow += 1
        if self._inWindow >= self._windowsize:
            self._sendAck(_pack(_ACK, block))
        else:
            self._arm(2 * self._rto.backoff(0))

    def _finishing(self, block: int) -> None:
        ack = _pack(_ACK, block)
        if self._commit is None:
            self._finalize(ack)
            return
        self._busy = True
        try:
            result = self._commit()
        except Exception:
            self._committed(_caught(), ack)
            return
        if isinstance(result, Deferred):
            result.addBoth(self._committed, ack)
        else:
            self._committed(None, ack)

    def _committed(self, result: object, ack: bytes) -> None:
        self._busy = False
        if self._over:
            return
        if isinstance(result, Failure):
            self._fail(_ioError(result), sendError=True)
            return
        self._finalize(ack)

    def _finalize(self, ack: bytes) -> None:
        self._finalAck = ack
        self._send(ack)
        self._succeed()
        if self._closed:
            return  # the owner stopped it at once
        if self._dally > 0:
            self._timer = self._clock.callLater(self._dally, self._close)
            if self.settings.repeatFinalAck:
                again = min(2 * self._rto.rto, self._dally / 2)
                self._finalAgain = self._clock.callLater(again, self._sendFinalAgain)
        else:
            self._close()

    def _sendFinalAgain(self) -> None:
        self._finalAgain = None
        if not self._closed and self._finalAck is not None:
            self.stats.retransmits += 1
            self._send(self._finalAck)

    def _close(self) -> None:
        again, self._finalAgain = self._finalAgain, None
        if again is not None and again.active():
            again.cancel()
        super()._close()

    def _lateDatagram(self, datagram: bytes) -> None:
        """While dallying: a repeated last DATA means our last ACK was lost; send it again."""
        if self._closed or self._finalAck is None or len(datagram) < 4:
            return
        opcode, number = _unpack(datagram)
        if opcode == _DATA and number == _unpack(self._finalAck)[1]:
            self.stats.retransmits += 1
            self._send(self._finalAck)

    def repeatInitial(self) -> None:
        """The peer repeated its request: answer again if nothing has moved yet."""
        if not self._over and self._next == 1 and self._lastAck:
            self.stats.retransmits += 1
            self._fresh = False
            self._send(self._lastAck)
            if self._patience is not None and self._lastAck is self._initialPacket:
                self._waitUntil = self._clock.seconds() + self._patience
                self._arm(self._nextWait())

    def _timedOut(self) -> None:
        if self._patience is not None and self._next == 1 and self._lastAck is self._initialPacket:
            if self._clock.seconds() < self._waitUntil - 1e-9:
                if self._nudgesLeft and self._nudge is not None:
                    self._nudgesLeft -= 1
                    self._tries += 1
                    self.stats.retransmits += 1
                    self._send(self._nudge)
                self._arm(self._nextWait())
                return
            self._fail(
                errors.TransferTimeout(f"no DATA 1 within {self._patience:g} s"),
                sendError=False,
            )
            return
        if self._inWindow and not self._busy:
            # RFC 7440: blocks came in order, then the rest of the window never did (lost,
            # or dropped by a full receive buffer). ACK the last one we have, so the sender
            # goes on from there instead of resending the whole window into the same loss.
            # Not a retry: the peer moved since our last ACK.
            self._sendAck(_pack(_ACK, wrapBlock(self._next - 1, self._scheme or 0)))
            self._fresh = False  # the sender's own timer may have resent meanwhile (Karn)
            return
        if not self._retry():
            return
        self._fresh = False
        self._ackedAt = self._clock.seconds()
        self._send(self._lastAck)
        self._inWindow = 0
        self._arm(2 * self._rto.backoff(self._tries))
