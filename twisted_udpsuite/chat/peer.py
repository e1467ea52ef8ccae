"""
The chat peer: a L{DatagramProtocol} that talks plain text to another peer
(C{nc -u}, C{socat}, any script) or joins a chat room.

In a room it keeps the membership alive with keepalives, notices gaps in the
room's sequence numbers (and, through the keepalive's answer, messages lost
at the end) and asks for them again by itself; duplicates are not shown
twice.  What it receives goes to an L{IChatDisplay}, always neutralised by
L{twisted_udpsuite.terminal.printable} first.
"""

from __future__ import annotations

import time

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.chat.wire import (
    Command,
    MalformedMessage,
    Relay,
    Reply,
    parseReply,
)
from twisted_udpsuite.reactors import IReactorUDPCore, reactorOr
from twisted_udpsuite.terminal import printable

__all__ = ["ChatPeerProtocol", "IChatDisplay", "RecordingDisplay"]

Address = tuple[str, int]

#: Requests a non-member sends are padded with spaces: the room cuts its
#: answers to non-members to the request's size, and the padding leaves room
#: for a whole error ("not-member", "nick-taken NICK", ...).
_PAD = 64

#: After a gap: RESEND up to this many times, this many seconds apart (then
#: only with each keepalive).
_GAP_CHECKS = 5
_GAP_RETRY = 1.0


def _padded(command: Command) -> bytes:
    return command.toBytes().ljust(_PAD)


class IChatDisplay(Interface):
    """Where a L{ChatPeerProtocol} shows what happens (a terminal, a test)."""

    def showMessage(stamp: str, sender: str, text: str) -> None:
        """A message (C{sender} C{"*"} for a room event); all arguments are safe to print."""

    def showNotice(text: str) -> None:
        """Something the user should know (joined, errors, lost messages)."""


@implementer(IChatDisplay)
class RecordingDisplay:
    """An L{IChatDisplay} that keeps everything in lists (tests, bots)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []
        self.notices: list[str] = []

    def showMessage(self, stamp: str, sender: str, text: str) -> None:
        self.messages.append((stamp, sender, text))

    def showNotice(self, text: str) -> None:
        self.notices.append(text)


def _isRoomLine(datagram: bytes) -> bool:
    try:
        parseReply(datagram)
    except MalformedMessage:
        return False
    return True


def _show(address: Address) -> str:
    host = hostOf(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


class ChatPeerProtocol(DatagramProtocol):
    """
    A full-duplex chat endpoint; see the module docstring.

    @param reactor: the clock for keepalives and retries.
    @param display: where messages and notices go.
    @param encoding: of plain-text (direct) datagrams; rooms speak UTF-8.
    @param keepalive: seconds between keepalives while in a room (keep it
        well below the room's idle timeout).
    @param gapWait: seconds to wait after a gap before asking for it again
        (a reordered datagram may still arrive).
    @param joinRetry: seconds between JOIN attempts; C{joinTries} in all.
    @param sendRetry: seconds before a line the room has not acknowledged is
        sent again; C{sendTries} in all.
    @ivar state: C{"idle"}, C{"joining"} or C{"joined"}.
    """

    log = Logger(namespace="twisted_udpsuite.chat")
    noisy = False

    def __init__(
        self,
        reactor: IReactorUDPCore | None = None,
        display: IChatDisplay | None = None,
        encoding: str = "utf-8",
        keepalive: float = 20.0,
        gapWait: float = 0.3,
        joinRetry: float = 2.0,
        joinTries: int = 8,
        sendRetry: float = 1.0,
        sendTries: int = 5,
    ) -> None:
        "".encode(encoding)  # LookupError now rather than on the first message
        self._reactor = reactorOr(reactor)
        self.display: IChatDisplay = display if display is not None else RecordingDisplay()
        self.encoding = encoding
        self.keepaliveInterval = keepalive
        self.gapWait = gapWait
        self.joinRetry = joinRetry
        self.joinTries = joinTries
        self.peer: Address | None = None
        self.room: Address | None = None
        self.nick: str | None = None
        self.state = "idle"
        self._floor: int | None = None
        self._seen: set[int] = set()
        self._top = 0
        self._tries = 0
        self._joinTimer: IDelayedCall | None = None
        self._gapTimer: IDelayedCall | None = None
        self._keepalive: LoopingCall | None = None
        self._lastRoom: Address | None = None
        self._outbox: list[str] = []
        self._attempts = 0
        self._lastSent = 0
        self._gapChecks = 0
        self._sendTimer: IDelayedCall | None = None
        self.sendRetry = sendRetry
        self.sendTries = sendTries

    # What the user does

    def setPeer(self, address: Address) -> None:
        """Send plain text to C{address} from now on (and leave any room)."""
        if self.room is not None:
            self.leave()
        self.peer = address
        self.display.showNotice(f"talking to {_show(address)}")

    def say(self, text: str) -> bool:
        """Send a line to the room or the peer; false (with a notice) if it cannot go."""
        if self.room is not None:
            if self.state != "joined":
                self.display.showNotice("not in the room yet")
                return False
            self._outbox.append(text)
            if len(self._outbox) == 1:
                self._sendNext()
            return True
        if self.peer is None:
            self.display.showNotice("nobody to talk to: /to HOST:PORT or /join HOST:PORT NICK")
            return False
        try:
            payload = text.encode(self.encoding)
        except UnicodeEncodeError as e:
            self.display.showNotice(f"cannot encode that as {self.encoding}: {e.reason}")
            return False
        return self._write(payload, self.peer)

    def join(self, room: Address, nick: str) -> None:
        """Enter the room at C{room} as C{nick} (retried until it answers)."""
        if self.room is not None and self.room != room:
            self.leave()
        self.room, self.nick, self.state = room, nick, "joining"
        self._floor, self._seen, self._top = None, set(), 0
        self._tries = self._lastSent = 0
        self._sendJoin()

    def leave(self) -> None:
        """Leave the room (one LEAVE; the room expires us anyway if it is lost)."""
        if self.room is not None:
            self._lastRoom = (hostOf(self.room[0]), self.room[1])
            self._write(Command("LEAVE").toBytes(), self.room)
            self.display.showNotice(f"left the room at {_show(self.room)}")
        self.room = None
        self.state = "idle"
        self._stopTimers()

    def who(self) -> None:
        """Ask the room who is in it."""
        if self._inRoom():
            assert self.room is not None
            self._write(Command("WHO").toBytes(), self.room)

    def changeNick(self, nick: str) -> None:
        """Ask the room for a new nick."""
        if self._inRoom():
            assert self.room is not None
            self._write(Command("NICK", nick).toBytes(), self.room)

    def _inRoom(self) -> bool:
        if self.state != "joined":
            self.display.showNotice("not in a room: /join HOST:PORT NICK")
            return False
        return True

    # DatagramProtocol

    def stopProtocol(self) -> None:
        self._stopTimers()

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        try:
            source = (hostOf(addr[0]), addr[1])
            if self.room is not None and source == (hostOf(self.room[0]), self.room[1]):
                self._fromRoom(datagram)
            elif source == self._lastRoom and _isRoomLine(datagram):
                pass  # stragglers (OK LEFT, relays in flight) from a room we left
            else:
                stamp = time.strftime("%H:%M:%S", time.gmtime(self._reactor.seconds()))
                self.display.showMessage(stamp, _show(source), printable(datagram, self.encoding))
        except Exception:
            self.log.failure("chat peer: error handling a datagram from {peer}", peer=addr)

    # Room mode

    def _fromRoom(self, datagram: bytes) -> None:
        try:
            message = parseReply(datagram)
        except MalformedMessage:
            stamp = time.strftime("%H:%M:%S", time.gmtime(self._reactor.seconds()))
            assert self.room is not None
            self.display.showMessage(stamp, _show(self.room), printable(datagram, "utf-8"))
            return
        if isinstance(message, Relay):
            if self._accept(message.seq):
                sender = message.nick if message.nick is not None else "*"
                self.display.showMessage(
                    message.time, printable(sender.encode()), printable(message.text.encode())
                )
        else:
            try:
                self._onReply(message)
            except (MalformedMessage, IndexError):  # e.g. "OK PONG" with no number
                self.log.debug("chat peer: bad reply from the room: {reply!r}", reply=message)

    def _onReply(self, reply: Reply) -> None:
        if not reply.ok:
            self._onError(reply)
            return
        if reply.what == "JOINED" and self.state != "idle":
            first, last = reply.number(1), reply.number(2)
            if self._floor is None and self._seen:
                # An earlier welcome was lost, and lines came before this one: we were a
                # member from the first of them on, so what is missing since is ours to ask.
                first = min(first, min(self._seen))
            if self._floor is None or last < self._floor:
                self._floor, self._seen = first - 1, {s for s in self._seen if s >= first}
            self._top = max(self._top, last)
            self.nick = reply.args[0]
            if self.state != "joined":
                self.state = "joined"
                self.display.showNotice(f"joined the room as {printable(self.nick.encode())}")
                self._cancel("_joinTimer")
                self._keepalive = LoopingCall(self._tick)
                self._keepalive.clock = self._reactor
                self._keepalive.start(self.keepaliveInterval, now=False)
            self._compact()
            self._scheduleGapCheck()
        elif reply.what == "SENT":
            seq = reply.number(0)
            self._accept(seq)
            # A late or duplicated SENT for the previous line must not
            # acknowledge this one: the room numbers each new line higher.
            if self._outbox and seq > self._lastSent:
                self._lastSent = seq
                self._outbox.pop(0)
                self._attempts = 0
                self._cancel("_sendTimer")
                self._sendNext()
        elif reply.what == "PONG":
            self._top = max(self._top, reply.number(0))
            self._compact()
            self._requestMissing()
            if self._gapTimer is None:  # lines lost at the end: keep asking a while
                self._gapChecks = 0
                self._scheduleGapCheck(_GAP_RETRY)
        elif reply.what == "NICK":
            self.nick = reply.args[0]
            self._top = max(self._top, reply.number(1))
            self.display.showNotice(f"you are now {printable(self.nick.encode())}")
        elif reply.what == "WHO":
            names = ", ".join(printable(n.encode()) for n in reply.args)
            self.display.showNotice(f"in the room: {names}")
        elif reply.what == "LEFT":
            pass

    def _onError(self, reply: Reply) -> None:
        text = printable(" ".join(reply.args).encode())
        if reply.what == "gone":
            words = reply.args[0].split() if reply.args else []
            if len(words) >= 2 and words[0].isdigit() and words[1].isdigit():
                first, last = int(words[0]), int(words[1])
                self._seen.update(range(first, min(last, first + 10000) + 1))
                self._compact()
                self.display.showNotice(f"missed #{first}-#{last}: no longer in the room's history")
            return
        if reply.what == "not-member" and self.state == "joined" and self.nick is not None:
            self.display.showNotice("the room forgot us; joining again")
            self.state = "joining"
            self._stopTimers()
            self._tries = self._lastSent = 0  # the room may have restarted its numbering
            self._sendJoin()
            return
        if reply.what in ("nick-taken", "full", "malformed") and self.state == "joining":
            self.display.showNotice(f"cannot join: {reply.what} {text}".rstrip())
            self.room, self.state = None, "idle"
            self._stopTimers()
            return
        self.display.showNotice(f"room: {reply.what or 'error'} {text}".rstrip())

    def _sendJoin(self) -> None:
        self._joinTimer = None
        if self.state != "joining" or self.room is None or self.nick is None:
            return
        if self._tries >= self.joinTries:
            self.display.showNotice(f"no answer from the room at {_show(self.room)}")
            self.room, self.state = None, "idle"
            return
        self._tries += 1
        self._write(_padded(Command("JOIN", self.nick)), self.room)
        self._joinTimer = self._reactor.callLater(self.joinRetry, self._sendJoin)

    def _sendNext(self) -> None:
        """
        Send the oldest unacknowledged line, one at a time, until the room
        says C{OK SENT} (it relays a repeated copy only once).
        """
        self._sendTimer = None
        if not self._outbox or self.room is None or self.state != "joined":
            return
        if self._attempts >= self.sendTries:
            text = self._outbox.pop(0)
            self.display.showNotice(f"no answer from the room; maybe not sent: {text[:40]}")
            self._attempts = 0
        if not self._outbox:
            return
        self._attempts += 1
        self._write(Command("MSG", self._outbox[0]).toBytes(), self.room)
        self._sendTimer = self._reactor.callLater(self.sendRetry, self._sendNext)

    def _tick(self) -> None:
        if self.room is not None:
            self._write(_padded(Command("PING")), self.room)
            self._requestMissing()

    # Sequence numbers

    def _accept(self, seq: int) -> bool:
        """Record C{seq}; false if it was seen before (a duplicate)."""
        if (self._floor is not None and seq <= self._floor) or seq in self._seen:
            return False
        self._seen.add(seq)
        self._top = max(self._top, seq)
        self._compact()
        self._scheduleGapCheck()
        return True

    def _compact(self) -> None:
        if self._floor is None:
            return
        while self._floor + 1 in self._seen:
            self._floor += 1
            self._seen.discard(self._floor)
        self._seen = {s for s in self._seen if s > self._floor}

    def missing(self) -> list[int]:
        """Sequence numbers known to exist that have not arrived (yet)."""
        if self._floor is None:
            return []
        return [s for s in range(self._floor + 1, self._top + 1) if s not in self._seen]

    def _scheduleGapCheck(self, delay: float | None = None) -> None:
        if self._gapTimer is None and self.state == "joined" and self.missing():
            if delay is None:
                self._gapChecks = 0
            wait = self.gapWait if delay is None else delay
            self._gapTimer = self._reactor.callLater(wait, self._gapCheck)

    def _gapCheck(self) -> None:
        """Ask for what is missing; ask again a few times, a second apart, until it comes."""
        self._gapTimer = None
        self._requestMissing()
        self._gapChecks += 1
        if self._gapChecks < _GAP_CHECKS:
            self._scheduleGapCheck(_GAP_RETRY)

    def _requestMissing(self) -> None:
        gaps = self.missing()
        if gaps and self.room is not None and self.state == "joined":
            first = gaps[0]
            last = min(gaps[-1], first + 49)
            self._write(Command("RESEND", first=first, last=last).toBytes(), self.room)

    # Plumbing

    def _write(self, payload: bytes, address: Address) -> bool:
        try:
            if self.transport is None:
                raise OSError("the socket is closed")
            self.transport.write(payload, address)
        except Exception as e:
            self.display.showNotice(f"cannot send to {_show(address)}: {e}")
            return False
        return True

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def _stopTimers(self) -> None:
        self._outbox.clear()
        self._attempts = 0
        self._cancel("_sendTimer")
        self._cancel("_joinTimer")
        self._cancel("_gapTimer")
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._keepalive = None
