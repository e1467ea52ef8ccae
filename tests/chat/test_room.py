"""The chat room on the in-memory network: every command, error and limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.chat.helpers import ROOM, RawClient, makeRoom, rawClient
from twisted_udpsuite.chat.room import ChatRoomProtocol, IChatRoomObserver, Member, RoomPolicy
from twisted_udpsuite.chat.wire import Relay, Reply
from twisted_udpsuite.testing import MemoryNetwork


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork(seed=1)


def joined(net: MemoryNetwork, *nicks: str) -> list[RawClient]:
    clients = []
    for i, nick in enumerate(nicks):
        c = rawClient(net, i)
        c.send(f"JOIN {nick}\n".encode())
        net.pump()
        clients.append(c)
    net.pump()
    for c in clients:
        c.take()
    return clients


def test_joinRelayAndTimestamps(net: MemoryNetwork) -> None:
    """
    A JOIN gets OK JOINED with the backlog range, the others hear the join,
    and each message reaches every other member with nick, time and
    sequence number; the sender gets OK SENT with its number.
    """
    _, room = makeRoom(net)
    net.advance(3600 * 12 + 61)
    alice = rawClient(net, 0)
    alice.send(b"JOIN alice\n")
    net.pump()
    assert alice.parsed() == [
        Reply(True, "JOINED", ("alice", "1", "1")),
        Relay(1, "12:01:01", None, "alice joined"),
    ]
    bob = rawClient(net, 1)
    bob.send(b"JOIN bob")
    net.pump()
    assert alice.parsed() == [Relay(2, "12:01:01", None, "bob joined")]
    assert bob.parsed()[0] == Reply(True, "JOINED", ("bob", "1", "2"))
    bob.send(b"hello alice\n")
    net.pump()
    assert alice.parsed() == [Relay(3, "12:01:01", "bob", "hello alice")]
    assert bob.parsed() == [Reply(True, "SENT", ("3",))]
    assert room.lastSeq == 3 and [r.seq for r in room.history] == [1, 2, 3]


def test_threeMembersAndWho(net: MemoryNetwork) -> None:
    """Every member gets every other member's message, not its own; WHO lists nicks."""
    makeRoom(net)
    a, b, c = joined(net, "alice", "bob", "carol")
    a.send(b"MSG hi")
    net.pump()
    assert [r.text for r in b.parsed()] == ["hi"]
    assert [r.text for r in c.parsed()] == ["hi"]
    assert a.parsed() == [Reply(True, "SENT", ("4",))]
    c.send(b"WHO")
    net.pump()
    assert c.parsed() == [Reply(True, "WHO", ("alice", "bob", "carol"))]


def test_backlog(net: MemoryNetwork) -> None:
    """A new member gets the last `backlog` lines after its welcome."""
    makeRoom(net, RoomPolicy(backlog=3))
    (a,) = joined(net, "alice")
    for i in range(5):
        a.send(f"m{i}".encode())
        net.pump()
    b = rawClient(net, 1)
    b.send(b"JOIN bob")
    net.pump()
    got = b.parsed()
    assert got[0] == Reply(True, "JOINED", ("bob", "5", "7"))
    assert [r.seq for r in got[1:]] == [5, 6, 7]
    assert [r.text for r in got[1:]] == ["m3", "m4", "bob joined"]


def test_rejoinIsIdempotent(net: MemoryNetwork) -> None:
    """JOIN again (the welcome was lost) welcomes again without a second join event."""
    _, room = makeRoom(net)
    a, b = joined(net, "alice", "bob")
    a.send(b"JOIN alice")
    net.pump()
    assert a.parsed()[0] == Reply(True, "JOINED", ("alice", "1", "2"))
    assert b.parsed() == [] and room.lastSeq == 2


def test_nickChanges(net: MemoryNetwork) -> None:
    """NICK renames (others hear it); taken nicks are refused, case-insensitively."""
    _, room = makeRoom(net)
    a, b = joined(net, "alice", "bob")
    a.send(b"NICK Bob")
    net.pump()
    assert a.parsed() == [Reply(False, "nick-taken", ("Bob",))]
    a.send(b"NICK alicia")
    net.pump()
    renamed = Relay(3, "00:00:00", None, "alice is now alicia")
    assert a.parsed() == [renamed, Reply(True, "NICK", ("alicia", "3"))]  # all hear events
    assert b.parsed() == [Relay(3, "00:00:00", None, "alice is now alicia")]
    c = rawClient(net, 2)
    c.send(b"JOIN ALICIA and more words to make the reply fit")
    net.pump()
    assert [type(m) for m in c.parsed()] == [Reply]  # malformed (two words)
    c.send(b"JOIN ALICIA                      ")
    net.pump()
    assert c.parsed() == [Reply(False, "nick-taken", ("ALICIA",))]
    # JOIN with another nick from a member renames.
    b.send(b"JOIN robert")
    net.pump()
    assert b.parsed()[:2] == [
        Relay(4, "00:00:00", None, "bob is now robert"),
        Reply(True, "JOINED", ("robert", "1", "4")),
    ]
    assert room.memberByNick("ROBERT") is not None


def test_leave(net: MemoryNetwork) -> None:
    """LEAVE removes the member (others hear it) and it gets no more relays."""
    _, room = makeRoom(net)
    a, b = joined(net, "alice", "bob")
    b.send(b"LEAVE\n")
    net.pump()
    assert b.parsed() == [Reply(True, "LEFT")]
    assert a.parsed() == [Relay(3, "00:00:00", None, "bob left")]
    a.send(b"anyone?")
    net.pump()
    assert b.take() == [] and list(room.members) == [a.address]


def test_pingAndResend(net: MemoryNetwork) -> None:
    """PING answers the newest number; RESEND replays held lines, and says what is gone."""
    makeRoom(net, RoomPolicy(history=3, backlog=0))
    a, b = joined(net, "alice", "bob")
    for i in range(4):
        a.send(f"m{i}".encode())
        net.pump()
    b.take()
    b.send(b"PING")
    net.pump()
    assert b.parsed() == [Reply(True, "PONG", ("6",))]
    b.send(b"RESEND 2 5")
    net.pump()
    got = b.parsed()
    assert got[0] == Reply(False, "gone", ("2 3",))
    assert [r.seq for r in got[1:]] == [4, 5]
    b.send(b"RESEND 6")
    net.pump()
    assert [r.seq for r in b.parsed()] == [6]
    b.send(b"RESEND 99")
    net.pump()
    assert b.parsed() == [Reply(True, "PONG", ("6",))]


def test_resendBatchIsBounded(net: MemoryNetwork) -> None:
    """One RESEND returns at most resendBatch lines."""
    makeRoom(net, RoomPolicy(resendBatch=5, rate=1000, burst=1000))
    a, b = joined(net, "alice", "bob")
    for i in range(20):
        a.send(f"m{i}".encode())
    net.pump()
    b.take()
    b.send(b"RESEND 1")
    net.pump()
    assert [r.seq for r in b.parsed()] == [1, 2, 3, 4, 5]


def test_errorsForMembers(net: MemoryNetwork) -> None:
    """Malformed commands, invalid UTF-8 and oversized datagrams get error replies."""
    makeRoom(net, RoomPolicy(maxMessage=100))
    a, b = joined(net, "alice", "bob")
    a.send(b"RESEND x")
    a.send(b"\xff\xfe\xfd")
    a.send(b"x" * 101)
    a.send(b"x" * 100)
    net.pump()
    replies = a.parsed()
    assert [r.what for r in replies] == ["malformed", "malformed", "too-long", "SENT"]
    assert replies[1].args == ("not UTF-8 (byte 0)",)
    assert replies[2].args == ("at most 100 bytes",)
    assert [r.seq for r in b.parsed()] == [3]


def test_controlCharactersAreNeutralised(net: MemoryNetwork) -> None:
    """Escape sequences and control characters are relayed as visible text."""
    makeRoom(net)
    a, b = joined(net, "alice", "bob")
    a.send(b"MSG \x1b[2J\x1b]0;pwned\x07 hi\r\nnext line\n")
    net.pump()
    (relay,) = b.parsed()
    assert isinstance(relay, Relay)
    assert relay.text == "\\x1b[2J\\x1b]0;pwned\\x07 hi\\r\\nnext line"
    assert "\x1b" not in relay.text and "\n" not in relay.text


def test_notAnAmplifier(net: MemoryNetwork) -> None:
    """A non-member's reply is never larger than its request (and tiny requests get none)."""
    _, room = makeRoom(net)
    joined(net, "alice")
    stranger = rawClient(net, 5)
    for request in [b"WHO", b"W", b"PING", b"hello", b"RESEND 1", b"\xff", b"PING" + b" " * 40]:
        stranger.send(request)
        net.pump()
        got = stranger.take()
        assert all(len(g) <= len(request) for g in got), (request, got)
    stranger.send(b"PING" + b" " * 40)
    net.pump()
    assert stranger.parsed() == [Reply(False, "not-member", ("JOIN NICK first",))]
    assert list(room.members) != [stranger.address] and len(room.members) == 1


def test_broadcastSourcesIgnored(net: MemoryNetwork) -> None:
    """Datagrams from broadcast, multicast or unspecified sources get no answer."""
    _, room = makeRoom(net)
    room.transport.write = lambda *a: pytest.fail("answered")  # type: ignore[method-assign]
    for source in ["255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1"]:
        room.datagramReceived(b"JOIN evil" + b" " * 40, (source, 5000))
    assert room.members == {}


def test_maxMembers(net: MemoryNetwork) -> None:
    """A JOIN beyond maxMembers gets ERR full."""
    makeRoom(net, RoomPolicy(maxMembers=2))
    joined(net, "alice", "bob")
    c = rawClient(net, 2)
    c.send(b"JOIN carol" + b" " * 30)
    net.pump()
    assert c.parsed() == [Reply(False, "full", ("2 members",))]


def test_rateLimit(net: MemoryNetwork) -> None:
    """A member over its rate gets ERR rate instead of relays; it recovers with time."""
    makeRoom(net, RoomPolicy(rate=1, burst=3))
    a, b = joined(net, "alice", "bob")
    net.advance(10)
    for i in range(5):
        a.send(f"m{i}".encode())
    net.pump()
    assert [r.what for r in a.parsed()] == ["SENT"] * 3 + ["rate"] * 2
    assert len(b.take()) == 3
    net.advance(1)
    a.send(b"again")
    net.pump()
    assert [r.what for r in a.parsed()] == ["SENT"]


def test_strangerFloodIsSilenced(net: MemoryNetwork) -> None:
    """A non-member over the rate gets nothing at all."""
    makeRoom(net, RoomPolicy(rate=1, burst=2))
    s = rawClient(net, 3)
    for _ in range(5):
        s.send(b"PING" + b" " * 40)
    net.pump()
    assert len(s.take()) == 2


def test_expiry(net: MemoryNetwork) -> None:
    """Silent members are dropped after idleTimeout; keepalives keep others in."""
    _, room = makeRoom(net, RoomPolicy(idleTimeout=30))
    a, b = joined(net, "alice", "bob")
    for _ in range(5):
        net.advance(10)
        a.send(b"PING")
        net.pump()
    assert list(m.nick for m in room.members.values()) == ["alice"]
    got = a.parsed()
    assert Relay(3, "00:00:30", None, "bob timed out") in got
    a.send(b"LEAVE")
    net.pump()
    assert room.members == {}
    assert net.clock.getDelayedCalls() == []


def test_stopProtocolCancelsTimers(net: MemoryNetwork) -> None:
    """Stopping the room leaves no timers behind."""
    host, room = makeRoom(net)
    joined(net, "alice")
    assert net.clock.getDelayedCalls()
    room.transport.stopListening()
    assert net.clock.getDelayedCalls() == []


@implementer(IChatRoomObserver)
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def memberJoined(self, member: Member) -> None:
        self.events.append(("joined", member.nick))

    def memberLeft(self, member: Member, reason: str) -> None:
        self.events.append(("left", member.nick, reason))

    def memberRenamed(self, member: Member, oldNick: str) -> None:
        self.events.append(("renamed", oldNick, member.nick))

    def messageRelayed(self, relay: Relay, member: Member | None) -> None:
        self.events.append(("relayed", str(relay.seq), member.nick if member else "*"))


class Broken:
    def __getattr__(self, name: str) -> object:
        def fail(*args: object) -> None:
            raise RuntimeError("observer bug")

        return fail


def test_observers(net: MemoryNetwork) -> None:
    """Observers hear joins, renames, messages and leaves; a broken one is only logged."""
    _, room = makeRoom(net)
    recorder = Recorder()
    verifyObject(IChatRoomObserver, recorder)
    room.addObserver(Broken())  # type: ignore[arg-type]
    room.addObserver(recorder)
    with capturedLogs() as events:
        a, b = joined(net, "alice", "bob")
        a.send(b"hi")
        b.send(b"NICK robert")
        b.send(b"LEAVE")
        net.pump()
        room.announce("server restarting \x1b[5m")
    assert recorder.events == [
        ("relayed", "1", "*"),
        ("joined", "alice"),
        ("relayed", "2", "*"),
        ("joined", "bob"),
        ("relayed", "3", "alice"),
        ("relayed", "4", "*"),
        ("renamed", "bob", "robert"),
        ("relayed", "5", "*"),
        ("left", "robert", "left"),
        ("relayed", "6", "*"),
    ]
    assert room.history[-1].text == "server restarting \\x1b[5m"
    assert any(e.get("log_failure") for e in events)
    said = [e for e in events if e.get("nick") == "alice"]
    assert said and said[0]["text"] == "hi" and said[0]["time"] == "00:00:00"
    room.removeObserver(recorder)


def test_garbageNeverRaises(net: MemoryNetwork) -> None:
    """datagramReceived swallows anything, even a transport failure, and the room works on."""
    _, room = makeRoom(net)
    a, b = joined(net, "alice", "bob")

    def boom(*args: object) -> None:
        raise OSError("no buffer space")

    original = room.transport.write
    room.transport.write = boom  # type: ignore[method-assign]
    with capturedLogs():
        room.datagramReceived(b"MSG hi", a.address)
        room.datagramReceived(b"", ("not an address", "x"))  # type: ignore[arg-type]
    room.transport.write = original  # type: ignore[method-assign]
    a.send(b"still here")
    net.pump()
    assert [r.text for r in b.parsed()][-1] == "still here"


def test_defaultReactor() -> None:
    """Without a reactor the room uses the global one (only through reactorOr)."""
    from twisted.internet import reactor

    assert ChatRoomProtocol()._clock is reactor


def test_roomAddress() -> None:
    assert ROOM == ("192.0.2.1", 9999)


@pytest.mark.parametrize("idleTimeout", [0.7, 1.3, 60.0])
def test_expiryWithFractionalTimes(idleTimeout: float) -> None:
    """Float rounding at the expiry instant never leaves the timer spinning."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net, RoomPolicy(idleTimeout=idleTimeout, rate=1000, burst=1000))
    clients = [rawClient(net, i) for i in range(30)]
    for i, client in enumerate(clients):
        net.advance(0.1)
        client.send(f"JOIN user{i}".encode())
        net.pump()
    net.advance(idleTimeout * 2 + 5)
    assert room.members == {}
    assert net.clock.getDelayedCalls() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=30))
def test_fuzzRoom(datagrams: list[tuple[bool, bytes]]) -> None:
    """
    Any datagrams from a member or a stranger: the room never raises, never
    answers a stranger with more than it sent, and still relays afterwards.
    """
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net, RoomPolicy(rate=1000, burst=1000))
    member, watcher = joined(net, "member", "watcher")
    stranger = rawClient(net, 5)
    datagrams.append((False, b"JOIN stranger"))
    with capturedLogs() as events:
        for fromMember, data in datagrams:
            (member if fromMember else stranger).send(data)
            net.pump()
            got = stranger.take()
            if not fromMember and stranger.address not in room.members:
                assert all(len(g) <= len(data) for g in got), (data, got)
    assert [e for e in events if e.get("log_failure")] == []
    member.send(b"LEAVE")
    net.pump()
    stranger.send(b"LEAVE")
    net.pump()
    watcher.take()
    net.advance(1)
    watcher.send(b"WHO")
    net.pump()
    assert watcher.parsed()[-1] == Reply(True, "WHO", ("watcher",))
    assert stranger.address not in room.members
