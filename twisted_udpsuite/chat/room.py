"""
The chat room server: a L{DatagramProtocol} that relays each member's
messages to the others, numbered so that members can recover what UDP lost.

Members are addresses that joined with a unique nick.  Every relayed line
(a message or a room event) gets the next room sequence number and lands in
a bounded history; a member that sees a gap asks for it again with
C{RESEND}, and a new member gets the last few lines.  Members that neither
talk nor send keepalives for C{idleTimeout} seconds are dropped.  Nothing
here may be turned against a third party: broadcast/multicast sources are
never answered, and a non-member never gets a reply larger than its request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.chat.wire import (
    Command,
    MalformedMessage,
    Relay,
    Reply,
    formatTime,
    parseCommand,
)
from twisted_udpsuite.localaddress import ILocalAddressReceiver, writeFrom
from twisted_udpsuite.ratelimit import PerSourceLimiter
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.terminal import printable

__all__ = ["ChatRoomProtocol", "IChatRoomObserver", "Member", "RoomPolicy", "MAX_DATAGRAM"]

#: Receive buffer: every UDP datagram fits, so an oversized one is seen as
#: oversized (and answered) rather than silently cut to Twisted's 8 KiB.
MAX_DATAGRAM = 65536

Address = tuple[str, int]

#: The same text from the same member within this many seconds of its last
#: copy is a duplicated or retried datagram, not a new message.
DUPLICATE_WINDOW = 5.0


@dataclass
class RoomPolicy:
    """
    The limits of a room.

    @ivar maxMembers: members at once; a JOIN beyond gets C{ERR full}.
    @ivar maxMessage: largest datagram accepted, in bytes (C{ERR too-long}).
    @ivar history: relayed lines kept for C{RESEND}.
    @ivar backlog: lines a new member gets on joining (at most C{history}).
    @ivar idleTimeout: seconds of silence after which a member is dropped.
    @ivar rate: datagrams per second per member (and per non-member address).
    @ivar burst: datagrams a member may send at once.
    @ivar resendBatch: most lines sent for one C{RESEND}.
    """

    maxMembers: int = 64
    maxMessage: int = 1024
    history: int = 200
    backlog: int = 20
    idleTimeout: float = 90.0
    rate: float = 5.0
    burst: float = 20.0
    resendBatch: int = 50


@dataclass
class Member:
    """
    One member: where it is, what it is called, when it was last heard.

    @ivar recent: its latest lines (text → last copy's time, sequence
        number), to relay a duplicated or retried datagram only once.
    """

    address: Address
    nick: str
    joined: float
    lastSeen: float
    recent: dict[str, tuple[float, int]] = field(default_factory=dict)
    lines: int = 0
    """Messages it had relayed (for the log line when it leaves)."""
    bytes: int = 0
    """Their UTF-8 size."""
    local: str | None = None
    """Our address it last wrote to, which it expects to hear from (None: unknown)."""


class IChatRoomObserver(Interface):
    """
    Told what happens in a room, to log it or bridge it elsewhere.  An
    observer's exception is logged and does not disturb the room.
    """

    def memberJoined(member: Member) -> None:
        """C{member} joined."""

    def memberLeft(member: Member, reason: str) -> None:
        """C{member} is gone; C{reason} is C{"left"} or C{"timed out"}."""

    def memberRenamed(member: Member, oldNick: str) -> None:
        """C{member} (with its new nick) was called C{oldNick}."""

    def messageRelayed(relay: Relay, member: Member | None) -> None:
        """A line was relayed: a member's message, or a room event (C{member} C{None})."""


@implementer(ILocalAddressReceiver)
class ChatRoomProtocol(DatagramProtocol):
    """
    A UDP chat room (see C{PROTOCOL.md}).  Listen with C{maxPacketSize=}
    L{MAX_DATAGRAM} so oversized datagrams are seen whole and refused.

    @param reactor: the clock for timestamps, rate limits and expiry.
    @param policy: the limits (default L{RoomPolicy}()).
    @ivar members: the members by address.
    @ivar lastSeq: the newest sequence number (0: nothing relayed yet).
    @ivar history: the last relayed lines, oldest first.
    @ivar resendRequests: C{RESEND} requests answered; C{linesResent}: lines sent for them.
    """

    log = Logger(namespace="twisted_udpsuite.chat")
    noisy = False

    def __init__(
        self, reactor: IReactorTime | None = None, policy: RoomPolicy | None = None
    ) -> None:
        self._clock: IReactorTime = reactorOr(reactor)
        self.policy = policy if policy is not None else RoomPolicy()
        self.members: dict[Address, Member] = {}
        self.lastSeq = 0
        self.history: deque[Relay] = deque(maxlen=max(1, self.policy.history))
        self._observers: list[IChatRoomObserver] = []
        self._memberLimiter = PerSourceLimiter(self._clock, self.policy.rate, self.policy.burst)
        self._strangerLimiter = PerSourceLimiter(self._clock, self.policy.rate, self.policy.burst)
        self._expiry: IDelayedCall | None = None
        self._local: str | None = None  # where the datagram being handled was sent
        self.resendRequests = 0  # RESENDs answered (metrics)
        self.linesResent = 0  # lines sent again for them

    # Observers and the embedding app

    def addObserver(self, observer: IChatRoomObserver) -> None:
        """Tell C{observer} about joins, leaves, renames and every relayed line."""
        self._observers.append(observer)

    def removeObserver(self, observer: IChatRoomObserver) -> None:
        self._observers.remove(observer)

    def announce(self, text: str) -> Relay:
        """Relay a room event (C{* text}) from the app to every member."""
        return self._relay(None, printable(text.encode("utf-8")))

    def memberByNick(self, nick: str) -> Member | None:
        key = nick.casefold()
        return next((m for m in self.members.values() if m.nick.casefold() == key), None)

    # DatagramProtocol

    def stopProtocol(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self.datagramReceivedAt(datagram, addr, None)

    def datagramReceivedAt(self, datagram: bytes, addr: Address, local: str | None) -> None:
        """A datagram sent to our address C{local}: its author hears us from there."""
        self._local = local
        try:
            self._received(datagram, (addr[0], addr[1]))
        except Exception:
            self.log.failure("chat room: error handling a datagram from {peer}", peer=addr)
        finally:
            self._local = None

    def _received(self, data: bytes, addr: Address) -> None:
        if isUnanswerableSource(addr[0]):
            self.log.debug("chat room: ignored datagram from {peer}", peer=addr)
            return
        member = self.members.get(addr)
        if member is not None:
            member.local = self._local
            if not self._memberLimiter.allow(addr):
                self._reply(addr, Reply(False, "rate", ("slow down",)), data, member)
                return
        elif not self._strangerLimiter.allow(hostOf(addr[0])):
            return
        if len(data) > self.policy.maxMessage:
            self._reply(
                addr,
                Reply(False, "too-long", (f"at most {self.policy.maxMessage} bytes",)),
                data,
                member,
            )
            return
        try:
            command = parseCommand(data)
        except MalformedMessage as e:
            self._reply(addr, Reply(False, "malformed", (str(e),)), data, member)
            return
        if member is not None:
            member.lastSeen = self._clock.seconds()
        if command.verb == "JOIN":
            self._join(addr, command, data, member)
        elif member is None:
            self._reply(addr, Reply(False, "not-member", ("JOIN NICK first",)), data, None)
        else:
            getattr(self, "_do" + command.verb.title())(member, command)

    # Replies

    def _send(self, addr: Address, payload: bytes) -> None:
        member = self.members.get(addr)
        local = member.local if member is not None else self._local
        try:
            writeFrom(self.transport, payload, addr, local)
        except Exception as e:
            self.log.warn("chat room: cannot send to {peer}: {error}", peer=addr, error=e)

    def _reply(self, addr: Address, reply: Reply, request: bytes, member: Member | None) -> None:
        """
        Answer C{addr}; a non-member's answer is cut to the request's size,
        so that forging a source address buys no amplification.
        """
        payload = reply.toBytes()
        if member is None and len(payload) > len(request):
            payload = payload[: len(request)].decode("utf-8", "ignore").encode("utf-8")
        if payload:
            self._send(addr, payload)

    def _relay(self, author: Member | None, text: str) -> Relay:
        now = self._clock.seconds()
        self.lastSeq += 1
        relay = Relay(self.lastSeq, formatTime(now), author.nick if author else None, text)
        self.history.append(relay)
        payload = relay.toBytes()
        for member in list(self.members.values()):
            if member is not author:
                self._send(member.address, payload)
        if author is not None:
            self.log.info(
                "{time} #{seq} <{nick}> ({peer}:{port}) {text}",
                time=relay.time,
                seq=relay.seq,
                nick=author.nick,
                peer=author.address[0],
                port=author.address[1],
                text=text,
            )
        else:
            self.log.info("{time} #{seq} * {text}", time=relay.time, seq=relay.seq, text=text)
        self._notify("messageRelayed", relay, author)
        return relay

    def _notify(self, method: str, *args: Any) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, method)(*args)
            except Exception:
                self.log.failure("chat room observer {observer} failed", observer=observer)

    # Commands

    def _join(self, addr: Address, command: Command, data: bytes, member: Member | None) -> None:
        holder = self.memberByNick(command.text)
        if holder is not None and holder is not member:
            self._reply(addr, Reply(False, "nick-taken", (command.text,)), data, member)
            return
        if member is not None:
            if member.nick != command.text:
                self._rename(member, command.text)
        elif len(self.members) >= self.policy.maxMembers:
            self._reply(
                addr, Reply(False, "full", (f"{self.policy.maxMembers} members",)), data, None
            )
            return
        else:
            now = self._clock.seconds()
            member = Member(addr, command.text, now, now, local=self._local)
            self._relay(None, f"{member.nick} joined")  # the others hear it; we get the backlog
            self.members[addr] = member
            self._notify("memberJoined", member)
            self._scheduleExpiry()
        count = min(self.policy.backlog, len(self.history))
        backlog = list(self.history)[len(self.history) - count :]
        first = backlog[0].seq if backlog else self.lastSeq + 1
        self._send(
            addr,
            Reply(True, "JOINED", (member.nick, str(first), str(self.lastSeq))).toBytes(),
        )
        for relay in backlog:
            self._send(addr, relay.toBytes())

    def _doMsg(self, member: Member, command: Command) -> None:
        now = self._clock.seconds()
        recent = member.recent
        for text in [t for t, (seen, _) in recent.items() if now - seen >= DUPLICATE_WINDOW]:
            del recent[text]
        if command.text in recent:
            # The network (or a retrying client) delivered it twice: relay it once.
            seq = recent[command.text][1]
            recent[command.text] = (now, seq)
            self._send(member.address, Reply(True, "SENT", (str(seq),)).toBytes())
            return
        relay = self._relay(member, printable(command.text.encode("utf-8")))
        member.lines += 1
        member.bytes += len(relay.text.encode("utf-8"))
        recent[command.text] = (now, relay.seq)
        if len(recent) > 16:
            del recent[next(iter(recent))]
        self._send(member.address, Reply(True, "SENT", (str(relay.seq),)).toBytes())

    def _rename(self, member: Member, nick: str) -> Relay:
        old, member.nick = member.nick, nick
        relay = self._relay(None, f"{old} is now {nick}")
        self._notify("memberRenamed", member, old)
        return relay

    def _doNick(self, member: Member, command: Command) -> None:
        holder = self.memberByNick(command.text)
        if holder is not None and holder is not member:
            self._send(member.address, Reply(False, "nick-taken", (command.text,)).toBytes())
            return
        if member.nick != command.text:
            self._rename(member, command.text)
        self._send(member.address, Reply(True, "NICK", (member.nick, str(self.lastSeq))).toBytes())

    def _doWho(self, member: Member, command: Command) -> None:
        nicks = sorted((m.nick for m in self.members.values()), key=str.casefold)
        self._send(member.address, Reply(True, "WHO", tuple(nicks)).toBytes())

    def _doPing(self, member: Member, command: Command) -> None:
        self._send(member.address, Reply(True, "PONG", (str(self.lastSeq),)).toBytes())

    def _doLeave(self, member: Member, command: Command) -> None:
        self._remove(member, "left")
        self._send(member.address, Reply(True, "LEFT").toBytes())

    def _doResend(self, member: Member, command: Command) -> None:
        self.resendRequests += 1
        last = min(command.last if command.last is not None else self.lastSeq, self.lastSeq)
        last = min(last, command.first + self.policy.resendBatch - 1)
        if command.first > last:
            self._send(member.address, Reply(True, "PONG", (str(self.lastSeq),)).toBytes())
            return
        oldest = self.history[0].seq if self.history else self.lastSeq + 1
        if command.first < oldest:
            gone = (f"{command.first} {min(last, oldest - 1)}",)
            self._send(member.address, Reply(False, "gone", gone).toBytes())
        for relay in self.history:
            if command.first <= relay.seq <= last:
                self._send(member.address, relay.toBytes())
                self.linesResent += 1

    # Membership and expiry

    def _remove(self, member: Member, reason: str) -> None:
        if self.members.pop(member.address, None) is None:
            return
        self.log.info(
            "member {nick} ({peer}) {outcome} after {duration:.1f} s, {lines} lines",
            nick=member.nick,
            peer=member.address,
            outcome=reason,
            duration=self._clock.seconds() - member.joined,
            lines=member.lines,
            bytes=member.bytes,
            file=None,
            service="chatroom",
        )
        self._relay(None, f"{member.nick} {reason}")
        self._notify("memberLeft", member, reason)
        if not self.members:
            self.stopProtocol()

    def _scheduleExpiry(self) -> None:
        if self._expiry is not None or not self.members:
            return
        due = min(m.lastSeen for m in self.members.values()) + self.policy.idleTimeout
        # Never less than a millisecond: float rounding must not make it spin.
        self._expiry = self._clock.callLater(max(0.001, due - self._clock.seconds()), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        now = self._clock.seconds()
        for member in list(self.members.values()):
            if now - member.lastSeen >= self.policy.idleTimeout - 1e-6:
                self._remove(member, "timed out")
        self._scheduleExpiry()
