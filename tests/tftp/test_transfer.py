"""The shared block engine on the in-memory network: loss, duplication, reordering, rollover."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from twisted_udpsuite.testing import EventClock, MemoryNetwork
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.netascii import NetasciiReader, NetasciiWriter
from twisted_udpsuite.tftp.options import TransferOptions
from twisted_udpsuite.tftp.transfer import (
    EngineSettings,
    Receiver,
    Sender,
    TransferStats,
    errorPacket,
)
from twisted_udpsuite.tftp.wire import encodeAck, encodeData


class _Endpoint(DatagramProtocol):
    """Feeds every datagram from the peer to an engine."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.peer: tuple[str, int] | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.engine.datagramReceived(datagram)

    def send(self, data: bytes) -> None:
        self.transport.write(data, self.peer)


class _Sink:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)


def _transfer(
    net: MemoryNetwork,
    payload: bytes,
    options: TransferOptions | None = None,
    *,
    rollover: int = 0,
    retries: int = 8,
    reader: Any = None,
    writer: Any = None,
    oack: bool = False,
) -> tuple[TransferStats, TransferStats, bytes]:
    options = options if options is not None else TransferOptions()
    a = net.addHost("192.0.2.1/24")
    b = net.addHost("192.0.2.2/24")
    pa, pb = _Endpoint(), _Endpoint()
    a.listenUDP(1000, pa)
    b.listenUDP(2000, pb)
    pa.peer, pb.peer = ("192.0.2.2", 2000), ("192.0.2.1", 1000)
    sink = writer if writer is not None else _Sink()
    sender = Sender(
        pa.send,
        a,
        options,
        reader if reader is not None else io.BytesIO(payload),
        EngineSettings(rollover=rollover, retries=retries),
    )
    receiver = Receiver(pb.send, b, options, sink, EngineSettings(retries=retries))
    pa.engine, pb.engine = sender, receiver
    if oack:
        sender.start(b"\x00\x06blksize\x00" + str(options.blksize).encode() + b"\x00")
        receiver.start(None)
    else:
        receiver.start(None)
        sender.start()
    sent = net.runUntil(sender.done)
    received = net.runUntil(receiver.done)
    net.runUntil(receiver.finished)
    net.runUntil(sender.finished)
    assert net.clock.getDelayedCalls() == []
    data = sink.buffer.getvalue() if hasattr(sink, "buffer") else b""
    return sent, received, data


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1024, 5000])
def test_sizesLockStep(size: int) -> None:
    payload = os.urandom(size)
    sent, received, data = _transfer(MemoryNetwork(seed=size), payload)
    assert data == payload
    assert sent.bytes == received.bytes == size
    assert sent.blocks == received.blocks == size // 512 + 1
    assert sent.retransmits == 0


@pytest.mark.parametrize("windowsize", [1, 2, 4, 16])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossyNetwork(windowsize: int, seed: int) -> None:
    payload = os.urandom(40_000 + seed)
    net = MemoryNetwork(seed=seed, loss=0.2, duplicate=0.1, reorder=0.1, latency=0.001)
    options = TransferOptions(blksize=512, windowsize=windowsize)
    sent, received, data = _transfer(net, payload, options, retries=30)
    assert data == payload
    assert sent.retransmits > 0


@pytest.mark.parametrize(("rollover", "windowsize"), [(0, 8), (1, 1)])
def test_rollover(rollover: int, windowsize: int) -> None:
    payload = os.urandom(8 * 70_000 + 3)
    net = MemoryNetwork(seed=5, loss=0.01)
    options = TransferOptions(blksize=8, windowsize=windowsize)
    sent, received, data = _transfer(net, payload, options, rollover=rollover, retries=20)
    assert data == payload
    assert sent.blocks == 70_001


def test_rolloverWireNumbers() -> None:
    net = MemoryNetwork(seed=1)
    payload = b"x" * (8 * 65537)
    _transfer(net, payload, TransferOptions(blksize=8), rollover=1)
    blocks = [
        int.from_bytes(r.data[2:4], "big") for r in net.datagrams if r.data[:2] == b"\x00\x03"
    ]
    assert blocks[65534:65538] == [65535, 1, 2, 3]


def test_oackFirst() -> None:
    payload = os.urandom(3000)
    net = MemoryNetwork(seed=3, loss=0.3)
    sent, received, data = _transfer(net, payload, TransferOptions(blksize=1024), oack=True)
    assert data == payload


def test_netascii() -> None:
    text = b"a\nb\r\nc\r" * 300 + b"\r"
    sink = _Sink()
    net = MemoryNetwork(seed=2, loss=0.1)
    reader = NetasciiReader(io.BytesIO(text))
    writer = NetasciiWriter(sink)
    sent, received, _ = _transfer(
        net, b"", TransferOptions(blksize=64), reader=reader, writer=writer
    )
    writer.flush()
    assert sink.buffer.getvalue() == text
    assert sent.bytes == len(text) + text.count(b"\n") + text.count(b"\r")


class _SlowReader:
    """Answers every read later and sometimes short, as an app backend might."""

    def __init__(self, clock: Any, data: bytes) -> None:
        self._clock = clock
        self._data = io.BytesIO(data)

    def read(self, n: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        chunk = self._data.read(max(1, n // 3))
        self._clock.callLater(0.001, d.callback, chunk)
        return d


class _SlowWriter(_Sink):
    def __init__(self, clock: Any) -> None:
        super().__init__()
        self._clock = clock

    def write(self, data: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._clock.callLater(0.002, lambda: (self.buffer.write(data), d.callback(None)))
        return d


def test_asyncReaderAndWriter() -> None:
    payload = os.urandom(10_000)
    net = MemoryNetwork(seed=4, loss=0.1)
    reader = _SlowReader(net.clock, payload)
    writer = _SlowWriter(net.clock)
    _, _, data = _transfer(
        net, b"", TransferOptions(blksize=512, windowsize=4), reader=reader, writer=writer
    )
    assert data == payload


def test_noSorcerersApprentice() -> None:
    """A duplicate ACK never makes the sender resend."""
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(out.append, clock, TransferOptions(), io.BytesIO(b"x" * 2000))
    sender.start()
    assert out == [encodeData(1, b"x" * 512)]
    sender.ackReceived(1)
    sender.ackReceived(1)
    sender.ackReceived(1)
    assert out[1:] == [encodeData(2, b"x" * 512)]
    sender.ackReceived(7)  # nonsense: ignored too
    assert len(out) == 2
    sender.abort(errors.TFTPError("stop"), sendError=False)
    assert clock.getDelayedCalls() == []


def test_windowResendsFromAckInside() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(
        out.append, clock, TransferOptions(blksize=8, windowsize=4), io.BytesIO(b"y" * 100)
    )
    sender.start()
    assert [p[3] for p in out] == [1, 2, 3, 4]
    del out[:]
    sender.ackReceived(2)
    assert [p[3] for p in out] == [3, 4, 5, 6]
    sender.abort(errors.TFTPError("stop"), sendError=False)


def test_timeoutGivesUp() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(
        out.append, clock, TransferOptions(), io.BytesIO(b"z" * 10), EngineSettings(retries=3)
    )
    sender.start()
    failures: list[Any] = []
    sender.done.addErrback(failures.append)
    for _ in range(10):
        clock.advance(1)
    assert failures and failures[0].check(errors.TransferTimeout)
    assert len(out) == 4
    assert clock.getDelayedCalls() == []
    assert sender.finished.called


def test_retransmitBackoffAndAdaptive() -> None:
    """A fast peer brings the timeout down to MIN_RTO-ish; retries double it."""
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(out.append, clock, TransferOptions(blksize=8), io.BytesIO(b"q" * 800))
    sender.start()
    for block in range(1, 20):
        clock.advance(0.001)
        sender.ackReceived(block)
    before = len(out)
    clock.advance(0.06)
    assert len(out) == before + 1  # resent after ~50 ms, not a second
    sender.abort(errors.TFTPError("stop"), sendError=False)
    assert clock.getDelayedCalls() == []


def test_peerErrorStops() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    receiver = Receiver(out.append, clock, TransferOptions(), _Sink(), EngineSettings(dally=0))
    receiver.start(encodeAck(0))
    failures: list[Any] = []
    receiver.done.addErrback(failures.append)
    receiver.datagramReceived(errorPacket(3, "full"))
    assert failures[0].check(errors.DiskFull)
    assert out == [encodeAck(0)]
    assert clock.getDelayedCalls() == []


def test_receiverDalliesAndReAcks() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    receiver = Receiver(out.append, clock, TransferOptions(), _Sink())
    receiver.start(encodeAck(0))
    receiver.datagramReceived(encodeData(1, b"end"))
    assert receiver.done.called and not receiver.finished.called
    receiver.datagramReceived(encodeData(1, b"end"))
    assert out == [encodeAck(0), encodeAck(1), encodeAck(1)]
    clock.advance(1)
    assert receiver.finished.called
    assert clock.getDelayedCalls() == []


def test_receiverRejectsOversizedData() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    receiver = Receiver(out.append, clock, TransferOptions(blksize=8), _Sink())
    receiver.start(encodeAck(0))
    receiver.done.addErrback(lambda f: None)
    receiver.datagramReceived(encodeData(1, b"123456789"))
    assert out[-1][:4] == b"\x00\x05\x00\x04"
    assert clock.getDelayedCalls() == []


def test_commitFailureIsDiskFull() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []

    def commit() -> None:
        raise OSError(28, "No space left on device")

    receiver = Receiver(out.append, clock, TransferOptions(), _Sink(), commit=commit)
    receiver.start(encodeAck(0))
    failures: list[Any] = []
    receiver.done.addErrback(failures.append)
    receiver.datagramReceived(encodeData(1, b"a"))
    assert failures[0].check(errors.DiskFull)
    assert out[-1][:4] == b"\x00\x05\x00\x03"
    assert clock.getDelayedCalls() == []


class _FailingReader:
    """Gives one block, then fails the next read later (as an origin that dies mid-body)."""

    def __init__(self, clock: Any, error: Exception) -> None:
        self._clock = clock
        self._error = error
        self._reads = 0

    def read(self, n: int) -> bytes | Deferred[bytes]:
        self._reads += 1
        if self._reads == 1:
            return b"x" * n
        d: Deferred[bytes] = Deferred()
        self._clock.callLater(0.001, d.errback, self._error)
        return d


@pytest.mark.parametrize(
    ("error", "traceback"),
    [
        (errors.TFTPError("Origin failed after 512 of 2048 bytes"), False),
        (OSError(5, "Input/output error"), False),
        (RuntimeError("a bug in the reader"), True),
    ],
)
def test_readFailureLogsATracebackOnlyForABug(error: Exception, traceback: bool) -> None:
    """
    A reader failing with a TFTP or OS error (an origin dying mid-body, a disk error) ends the
    transfer with an ERROR to the client and no traceback in the log (the end line says
    why); any other exception is a bug in the reader and is logged with its traceback.
    """
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(out.append, clock, TransferOptions(), _FailingReader(clock, error))
    failures: list[Any] = []
    sender.done.addErrback(failures.append)
    with capturedLogs() as events:
        sender.start()
        sender.datagramReceived(encodeAck(1))
        clock.advance(0.001)
    assert failures and failures[0].check(errors.TFTPError)
    assert out[-1][:2] == b"\x00\x05"
    assert any("log_failure" in e for e in events) is traceback
    clock.advance(60)
    assert clock.getDelayedCalls() == []


def test_garbageIgnored() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    out: list[bytes] = []
    sender = Sender(out.append, clock, TransferOptions(), io.BytesIO(b"abc"))
    sender.start()
    for junk in (b"", b"\x00", b"\x00\x09\x00\x00", b"\x00\x01x", b"\x00\x03\x00\x01zz"):
        sender.datagramReceived(junk)
    sender.datagramReceived(encodeAck(1))
    assert sender.done.called


class _Timed:
    """Records what an engine sends, with the clock's time."""

    def __init__(self) -> None:
        self.clock = EventClock()  # timers run at their own time within an advance()
        self.sent: list[tuple[float, bytes]] = []

    def send(self, packet: bytes) -> None:
        self.sent.append((round(self.clock.seconds(), 6), bytes(packet)))

    def since(self, t: float) -> list[tuple[float, bytes]]:
        return [(when, packet) for when, packet in self.sent if when >= t]


def _curlLikeReceiver(wire: _Timed) -> Receiver:
    """An upload's receiver after curl asked for timeout 5 (its own resend interval)."""
    receiver = Receiver(
        wire.send,
        wire.clock,
        TransferOptions(timeout=5),
        _Sink(),
        EngineSettings(retries=12, timeout=1.0),
    )
    receiver.start(encodeAck(0))
    return receiver


def _feed(wire: _Timed, receiver: Receiver, after: float, block: int) -> None:
    wire.clock.advance(after)
    receiver.datagramReceived(encodeData(block, b"d" * 512))


def test_receiverReAckStartsFromOurTimeoutNotThePeers() -> None:
    """Before any round trip: the first re-ACK comes after 2 x our 1 s, not 2 x curl's 5 s."""
    wire = _Timed()
    receiver = _curlLikeReceiver(wire)
    wire.clock.advance(1.999)
    assert wire.sent == [(0, encodeAck(0))]
    wire.clock.advance(0.001)
    assert wire.sent[1:] == [(2.0, encodeAck(0))]
    receiver.abort(errors.TFTPError("stop"), sendError=False)
    assert wire.clock.getDelayedCalls() == []


def test_receiverReAcksALostDataAfterMeasuredRoundTrips() -> None:
    """Fast round trips bring the re-ACK of a lost DATA down to about 2 x MIN_RTO."""
    wire = _Timed()
    receiver = _curlLikeReceiver(wire)
    for block in range(1, 10):
        _feed(wire, receiver, 0.002, block)
    lastAck = wire.clock.seconds()
    wire.clock.advance(0.2)  # DATA 10 is lost
    assert [p for _, p in wire.since(lastAck + 0.001)] == [encodeAck(9)]
    assert wire.since(lastAck + 0.001)[0][0] == pytest.approx(lastAck + 0.1, abs=0.002)
    receiver.abort(errors.TFTPError("stop"), sendError=False)
    assert wire.clock.getDelayedCalls() == []


def test_receiverTakesNoSampleFromAResentAck() -> None:
    """
    Karn's rule: on a 0.3 s path DATA 8 comes again 0.4 s after our ACK 8 and we ACK it
    again. The DATA 9 that follows may answer either ACK: here it comes 1 ms after the
    copy, so it answered the first (delayed) one. Neither reading is a sample: measured from
    the copy (1 ms) or from the first ACK (0.4 s, as before: then curl's 6 s resend), it
    would throw the re-ACK timer off; without it the timer stays at 2 x (0.3 s + a little).
    """
    wire = _Timed()
    receiver = _curlLikeReceiver(wire)
    for block in range(1, 9):
        _feed(wire, receiver, 0.3, block)
    _feed(wire, receiver, 0.4, 8)
    assert wire.sent[-1] == (wire.clock.seconds(), encodeAck(8))
    _feed(wire, receiver, 0.001, 9)
    ack9 = wire.clock.seconds()
    wire.clock.advance(1.5)  # DATA 10 lost
    reAcks = wire.since(ack9 + 0.0001)
    assert [p for _, p in reAcks][:1] == [encodeAck(9)]
    assert ack9 + 0.7 < reAcks[0][0] < ack9 + 0.8
    receiver.abort(errors.TFTPError("stop"), sendError=False)
    assert wire.clock.getDelayedCalls() == []


def test_receiverTakesNoSampleFromTheDataAfterItsReAck() -> None:
    """
    Karn's rule on our side: DATA 4 was lost, our timer re-ACKed 3, and curl's resent DATA 4
    came late (its first copy was only slow). That exchange is no sample either.
    """
    wire = _Timed()
    receiver = _curlLikeReceiver(wire)
    for block in range(1, 4):
        _feed(wire, receiver, 0.002, block)
    wire.clock.advance(0.1)  # our re-ACK of 3
    _feed(wire, receiver, 4.9, 4)
    ack4 = wire.clock.seconds()
    wire.clock.advance(0.5)
    assert wire.since(ack4 + 0.001)[0][0] < ack4 + 0.2
    receiver.abort(errors.TFTPError("stop"), sendError=False)
    assert wire.clock.getDelayedCalls() == []


def test_receiverDoesNotAnswerACopyThatCrossedItsAck() -> None:
    """
    curl resends DATA on every out-of-date ACK: a copy that left it before our ACK could
    arrive is not answered, or every later block would travel twice. A copy that comes a
    resend interval later (our ACK was lost) is answered.
    """
    wire = _Timed()
    receiver = _curlLikeReceiver(wire)
    for block in range(1, 6):
        _feed(wire, receiver, 0.002, block)
    count = len(wire.sent)
    _feed(wire, receiver, 0.0005, 5)  # crossed our ACK 5 on the wire
    assert len(wire.sent) == count
    _feed(wire, receiver, 0.0004, 6)
    _feed(wire, receiver, 1.0, 6)  # a resend a whole interval later: ACK 6 was lost
    assert wire.sent[-1] == (wire.clock.seconds(), encodeAck(6))
    receiver.abort(errors.TFTPError("stop"), sendError=False)
    assert wire.clock.getDelayedCalls() == []


class _OrderedSink:
    """Records writes in the same list as the packets sent, to see which came first."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))


def _windowReceiver(windowsize: int = 4, blksize: int = 8) -> tuple[Any, Receiver, list[Any]]:
    from twisted.internet.task import Clock

    clock = Clock()
    events: list[Any] = []
    receiver = Receiver(
        lambda packet: events.append(("send", packet)),
        clock,
        TransferOptions(blksize=blksize, windowsize=windowsize),
        _OrderedSink(events),
        writesAtOnce=True,
    )
    receiver.start(encodeAck(0))
    del events[:]
    return clock, receiver, events


def test_wholeWindowAckedBeforeItIsWritten() -> None:
    """The rest of a window read at once: its ACK goes out first, then the writes."""
    clock, receiver, events = _windowReceiver()
    receiver.datagramReceived(encodeData(1, b"a" * 8))
    receiver.windowReceived([encodeData(n, bytes([96 + n]) * 8) for n in (2, 3, 4)])
    assert events == [
        ("write", b"a" * 8),
        ("send", encodeAck(4)),
        ("write", b"b" * 8 + b"c" * 8 + b"d" * 8),
    ]
    assert receiver.stats.blocks == 4 and receiver.stats.bytes == 32
    receiver.windowReceived([encodeData(5, b"e" * 8), encodeData(6, b"end")])
    assert receiver.done.called and events[-1] == ("send", encodeAck(6))
    clock.advance(10)
    assert receiver.finished.called and clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "window",
    [
        [encodeData(2, b"x" * 8)] * 4,  # not the next block
        [encodeData(n, b"x" * 8) for n in (1, 2, 4, 3)],  # out of order
        [encodeData(n, b"x" * 8) for n in (1, 2, 3)] + [encodeData(4, b"end")],  # the last
    ],
)
def test_otherReadsGoOneByOne(window: list[bytes]) -> None:
    """Anything but full blocks in order within the window is fed one at a time: the
    same ACKs and writes as from separate reads."""
    clock, receiver, events = _windowReceiver()
    receiver.windowReceived(window)
    clock2, single, events2 = _windowReceiver()
    for datagram in window:
        single.datagramReceived(datagram)
    assert events == events2
    for engine, c in ((receiver, clock), (single, clock2)):
        engine.abort(errors.TFTPError("done"), sendError=False)
        engine.done.addErrback(lambda _: None)
        c.advance(10)
        assert c.getDelayedCalls() == []


def test_partOfAWindowWrittenAsOne() -> None:
    """A read holding the first blocks of a window (a GSO batch is smaller than a window
    of large blocks) is one write and no ACK; the read that ends the window is ACKed."""
    clock, receiver, events = _windowReceiver()
    receiver.windowReceived([encodeData(n, bytes([96 + n]) * 8) for n in (1, 2, 3)])
    assert events == [("write", b"a" * 8 + b"b" * 8 + b"c" * 8)]
    assert clock.getDelayedCalls()  # the re-ACK timer runs: the window is not over
    receiver.windowReceived([encodeData(4, b"d" * 8)])
    assert events[1:] == [("send", encodeAck(4)), ("write", b"d" * 8)]
    assert receiver.stats.blocks == 4 and receiver.stats.bytes == 32
    receiver.abort(errors.TFTPError("done"), sendError=False)
    receiver.done.addErrback(lambda _: None)
    assert clock.getDelayedCalls() == []


@settings(max_examples=200, deadline=None)
@given(
    windowsize=st.integers(1, 6),
    blocks=st.integers(0, 30),
    lastLength=st.integers(0, 7),
    cuts=st.lists(st.integers(1, 8), max_size=40),
)
def test_anyCoalescingSameAsOneByOne(
    windowsize: int, blocks: int, lastLength: int, cuts: list[int]
) -> None:
    """However a clean transfer's datagrams are grouped into reads, the same ACKs go out in
    the same order and the same bytes are written."""
    data = os.urandom(8 * blocks + lastLength)
    datagrams = [encodeData(n + 1, data[8 * n : 8 * n + 8]) for n in range(blocks + 1)]
    _, grouped, groupedEvents = _windowReceiver(windowsize)
    _, single, singleEvents = _windowReceiver(windowsize)
    start = 0
    for cut in [*cuts, len(datagrams)]:
        if start < len(datagrams):
            grouped.windowReceived(datagrams[start : start + cut])
            start += cut
    for datagram in datagrams:
        single.datagramReceived(datagram)
    for events in (groupedEvents, singleEvents):
        assert b"".join(data for kind, data in events if kind == "write") == data
    assert [e for e in groupedEvents if e[0] == "send"] == [
        e for e in singleEvents if e[0] == "send"
    ]
    assert grouped.done.called and single.done.called
    assert grouped.stats.bytes == single.stats.bytes == len(data)


def test_windowTailLostAcksWhatArrived() -> None:
    """RFC 7440 §4: blocks 1-2 of a window of 4 arrive, the rest never does; the timer
    ACKs block 2 (not ACK 0 again), so the sender resends from 3."""
    clock, receiver, events = _windowReceiver()
    receiver.datagramReceived(encodeData(1, b"x" * 8))
    receiver.datagramReceived(encodeData(2, b"x" * 8))
    clock.advance(5)
    sent = [packet for kind, packet in events if kind == "send"]
    assert sent[0] == encodeAck(2)
    assert receiver.stats.retransmits == 0
    receiver.abort(errors.TFTPError("done"), sendError=False)
    receiver.done.addErrback(lambda _: None)
    assert clock.getDelayedCalls() == []
