"""
A ping-like UDP echo client: timed round trips, loss and latency statistics.

Each probe carries a random per-run nonce and a sequence number, so replies
to someone else's probes, late replies and duplicates are told apart from
the real thing.
"""

from __future__ import annotations

import os
import statistics
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.reactors import IReactorUDPTime, reactorOr

__all__ = ["PROBE_HEADER_SIZE", "PingCancelled", "PingReply", "PingResult", "ping"]

_PROBE = struct.Struct("!4s8sI")
_MAGIC = b"UEP1"
#: The smallest probe: magic, nonce and sequence number.
PROBE_HEADER_SIZE = _PROBE.size


@dataclass(frozen=True)
class PingReply:
    """One answered probe: its sequence number, size and round-trip time (s)."""

    sequence: int
    size: int
    rtt: float


@dataclass
class PingResult:
    """
    The outcome of L{ping}.

    @ivar sent: probes sent.
    @ivar replies: the first reply to each answered probe, in arrival order.
    @ivar duplicates: extra replies to probes already answered.
    @ivar stray: datagrams that were not replies to this run's probes.
    @ivar elapsed: seconds from the first probe to the end of the run.
    """

    target: tuple[str, int]
    sent: int = 0
    replies: list[PingReply] = field(default_factory=list)
    duplicates: int = 0
    stray: int = 0
    elapsed: float = 0.0

    @property
    def received(self) -> int:
        return len(self.replies)

    @property
    def loss(self) -> float:
        """The share of probes (0..1) that got no reply."""
        return 1.0 - self.received / self.sent if self.sent else 0.0

    def rtts(self) -> tuple[float, float, float, float] | None:
        """(min, avg, max, mdev) of the round trips in seconds, or None."""
        times = [r.rtt for r in self.replies]
        if not times:
            return None
        return min(times), statistics.fmean(times), max(times), statistics.pstdev(times)


class PingCancelled(CancelledError):
    """L{ping} was cancelled; C{result} holds what it measured until then."""

    def __init__(self, result: PingResult) -> None:
        super().__init__("ping cancelled")
        self.result = result


class _Pinger(DatagramProtocol):
    transport: IUDPTransport
    log = Logger(namespace="twisted_udpsuite.echo.client")

    def __init__(
        self,
        reactor: IReactorUDPTime,
        target: tuple[str, int],
        count: int,
        interval: float,
        size: int,
        timeout: float,
        onReply: Callable[[PingReply], None] | None,
        onTimeout: Callable[[int], None] | None,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._count = count
        self._interval = interval
        self._size = size
        self._timeout = timeout
        self._onReply = onReply
        self._onTimeout = onTimeout
        self._nonce = os.urandom(8)
        self._sentAt: dict[int, float] = {}
        self._waiting: dict[int, IDelayedCall] = {}
        self._answered: set[int] = set()
        self._nextSend: IDelayedCall | None = None
        self._start = 0.0
        self.result = PingResult(target)
        self.done: Deferred[PingResult] = Deferred(lambda d: self._finish(cancelled=True))

    def startProtocol(self) -> None:
        self._start = self._reactor.seconds()
        self._sendProbe(0)

    def _sendProbe(self, sequence: int) -> None:
        self._nextSend = None
        header = _PROBE.pack(_MAGIC, self._nonce, sequence)
        payload = header + b"\0" * (self._size - len(header))
        self._sentAt[sequence] = self._reactor.seconds()
        self.result.sent += 1
        try:
            self.transport.write(payload, self._target)
        except OSError as e:
            self.log.warn("probe {seq} not sent: {e}", seq=sequence, e=e)
        self._waiting[sequence] = self._reactor.callLater(self._timeout, self._expire, sequence)
        if sequence + 1 < self._count:
            self._nextSend = self._reactor.callLater(self._interval, self._sendProbe, sequence + 1)

    def _expire(self, sequence: int) -> None:
        del self._waiting[sequence]
        if self._onTimeout is not None:
            self._onTimeout(sequence)
        self._maybeFinish()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        now = self._reactor.seconds()
        if (hostOf(addr[0]), addr[1]) != (hostOf(self._target[0]), self._target[1]):
            self.result.stray += 1
            return
        if len(datagram) < _PROBE.size:
            self.result.stray += 1
            return
        magic, nonce, sequence = _PROBE.unpack_from(datagram)
        if magic != _MAGIC or nonce != self._nonce or sequence not in self._sentAt:
            self.result.stray += 1
            return
        if sequence in self._answered:
            self.result.duplicates += 1
            return
        timer = self._waiting.pop(sequence, None)
        if timer is None:
            return  # it already timed out: a late reply counts as lost
        timer.cancel()
        self._answered.add(sequence)
        reply = PingReply(sequence, len(datagram), now - self._sentAt[sequence])
        self.result.replies.append(reply)
        if self._onReply is not None:
            self._onReply(reply)
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if self._nextSend is None and not self._waiting:
            self._finish()

    def _finish(self, cancelled: bool = False) -> None:
        for timer in [*self._waiting.values(), self._nextSend]:
            if timer is not None and timer.active():
                timer.cancel()
        self._waiting.clear()
        self._nextSend = None
        self.result.elapsed = self._reactor.seconds() - self._start
        self.transport.stopListening()
        if cancelled:
            self.done.errback(PingCancelled(self.result))
        else:
            self.done.callback(self.result)


def ping(
    reactor: IReactorUDPTime | None,
    target: tuple[str, int],
    *,
    count: int = 5,
    interval: float = 1.0,
    size: int = 56,
    timeout: float = 2.0,
    onReply: Callable[[PingReply], None] | None = None,
    onTimeout: Callable[[int], None] | None = None,
) -> Deferred[PingResult]:
    """
    Send C{count} probes of C{size} bytes to an echo server, one every
    C{interval} seconds, and time the replies.

    @param reactor: provides C{listenUDP} and C{callLater} (C{None}: the global reactor).
    @param target: the server's (IP address, port); IPv6 works too.
    @param timeout: how long to wait for each probe's reply.
    @param onReply: called with each L{PingReply} as it arrives.
    @param onTimeout: called with the sequence number of each probe that got
        no reply in time.
    @return: fires with a L{PingResult} once every probe is answered or
        timed out.  Cancelling it closes the port and stops the timers; it then
        fails with L{PingCancelled}, which carries the statistics so far.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    if size < PROBE_HEADER_SIZE or size > 65507:
        raise ValueError(f"size must be from {PROBE_HEADER_SIZE} to 65507 bytes")
    if interval < 0 or timeout <= 0:
        raise ValueError("interval must be >= 0 and timeout > 0")
    reactor = reactorOr(reactor)
    pinger = _Pinger(reactor, target, count, interval, size, timeout, onReply, onTimeout)
    interface = "::" if ":" in target[0] else ""
    reactor.listenUDP(0, pinger, interface=interface, maxPacketSize=65536)
    return pinger.done
