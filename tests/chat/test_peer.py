"""The chat peer on the in-memory network: direct chat, rooms, loss and recovery."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from tests.chat.helpers import ROOM, makeRoom, rawClient
from twisted_udpsuite.chat.peer import ChatPeerProtocol, IChatDisplay, RecordingDisplay
from twisted_udpsuite.chat.room import RoomPolicy
from twisted_udpsuite.testing import MemoryNetwork


def makePeer(net: MemoryNetwork, index: int, **kwargs: object) -> ChatPeerProtocol:
    host = net.addHost(f"192.0.2.{100 + index}/24")
    peer = ChatPeerProtocol(host, **kwargs)  # type: ignore[arg-type]
    host.listenUDP(5000, peer)
    return peer


def display(peer: ChatPeerProtocol) -> RecordingDisplay:
    assert isinstance(peer.display, RecordingDisplay)
    return peer.display


def test_directChatWithRawPeer() -> None:
    """Plain text both ways with an nc-like peer; what arrives is made safe to show."""
    net = MemoryNetwork(seed=1)
    peer = makePeer(net, 0)
    verifyObject(IChatDisplay, peer.display)
    nc = rawClient(net, 0)
    assert peer.say("nobody yet") is False
    peer.setPeer(nc.address)
    assert peer.say("hello nc")
    net.pump()
    assert nc.take() == [b"hello nc"]
    nc.send(b"hi \x1b]0;title\x07 back\n", ("192.0.2.100", 5000))
    nc.send(b"\xff\xfe broken", ("192.0.2.100", 5000))
    net.pump()
    assert display(peer).messages == [
        ("00:00:00", "192.0.2.10:40000", "hi \\x1b]0;title\\x07 back\\n"),
        ("00:00:00", "192.0.2.10:40000", "\\xff\\xfe broken"),
    ]


def test_legacyEncoding() -> None:
    """--encoding gbk talks to the seeds' gbk scripts both ways."""
    net = MemoryNetwork(seed=1)
    peer = makePeer(net, 0, encoding="gbk")
    nc = rawClient(net, 0)
    peer.setPeer(nc.address)
    peer.say("你好")
    assert peer.say("emoji 🙂") is False  # not encodable: a notice, nothing sent
    nc.send("收到".encode("gbk"), ("192.0.2.100", 5000))
    net.pump()
    assert nc.take() == ["你好".encode("gbk")]
    assert display(peer).messages[-1][2] == "收到"
    assert "cannot encode" in display(peer).notices[-1]
    with pytest.raises(LookupError):
        ChatPeerProtocol(net.hosts[0], encoding="no-such-codec")


def test_roomWithLossRecoversEverything() -> None:
    """
    Four peers in a room over a lossy, duplicating, reordering network: every
    line typed reaches the room once, and is shown exactly once at every
    other member, thanks to retries, gap detection, keepalives and RESEND.
    """
    net = MemoryNetwork(seed=7, loss=0.2, duplicate=0.1, reorder=0.1, latency=0.005)
    _, room = makeRoom(net, RoomPolicy(idleTimeout=60))
    peers = [makePeer(net, i, keepalive=5.0) for i in range(4)]
    for i, p in enumerate(peers):
        p.join(ROOM, f"user{i}")
    net.advance(20)
    assert [p.state for p in peers] == ["joined"] * 4
    for round in range(10):
        for i, p in enumerate(peers):
            p.say(f"message {round} from {i}")
        net.advance(0.5)
    net.advance(30)
    assert [r.fate for r in net.datagrams].count("lost") > 20
    relayed = [(r.nick, r.text) for r in room.history if r.nick is not None]
    assert len(relayed) == 40  # every line typed reached the room once (MSG is retried)
    for i, p in enumerate(peers):
        shown = Counter((m[1], m[2]) for m in display(p).messages if m[1] != "*")
        expected = Counter(m for m in relayed if m[0] != f"user{i}")
        own = {m for m in shown if m[0] == f"user{i}"}  # own lines recovered by RESEND
        assert +(shown - Counter(own)) == expected, i
        assert max(shown.values()) == 1
        assert p.missing() == []
    # Leave; the room expires whoever's LEAVE was lost, then nothing is left running.
    for p in peers:
        p.leave()
    net.advance(120)
    assert room.members == {}
    assert net.clock.getDelayedCalls() == []


def test_gapTriggersResend() -> None:
    """A lost relay is noticed at the next one and asked for again."""
    net = MemoryNetwork(seed=1)
    makeRoom(net)
    alice, bob = makePeer(net, 0), makePeer(net, 1)
    alice.join(ROOM, "alice")
    bob.join(ROOM, "bob")
    net.advance(1)
    remove = net.dropIf(lambda r: r.data.startswith(b"#3 ") and r.destination[0] == "192.0.2.101")
    alice.say("lost once")
    net.pump()
    remove()
    alice.say("arrives")
    net.advance(1)
    sent = [r.data for r in net.datagrams if r.source[0] == "192.0.2.101"]
    assert b"RESEND 3 3" in sent
    texts = [m[2] for m in display(bob).messages]
    assert texts[-2:] == ["arrives", "lost once"]
    assert bob.missing() == []


def test_tailLossFoundByKeepalive() -> None:
    """The last message lost (no later one to show the gap): the PONG reveals it."""
    net = MemoryNetwork(seed=1)
    makeRoom(net)
    alice, bob = makePeer(net, 0, keepalive=5.0), makePeer(net, 1, keepalive=5.0)
    alice.join(ROOM, "alice")
    bob.join(ROOM, "bob")
    net.advance(1)
    dropped: list[bytes] = []

    def once(r: object) -> bool:
        if not dropped and r.data.startswith(b"#3 ") and r.destination[0] == "192.0.2.101":  # type: ignore[attr-defined]
            dropped.append(r.data)  # type: ignore[attr-defined]
            return True
        return False

    net.dropIf(once)
    alice.say("last words")
    net.advance(1)
    assert display(bob).messages[-1][2] != "last words"
    net.advance(5)
    assert display(bob).messages[-1][2] == "last words"
    alice.leave()
    bob.leave()
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


def test_goneMessagesAreGivenUp() -> None:
    """Lines no longer in the room's history are reported lost, not asked for forever."""
    net = MemoryNetwork(seed=1)
    makeRoom(net, RoomPolicy(history=2, backlog=0, rate=100, burst=100))
    alice, bob = makePeer(net, 0), makePeer(net, 1)
    alice.join(ROOM, "alice")
    bob.join(ROOM, "bob")
    net.advance(1)
    net.dropIf(lambda r: r.data.startswith((b"#3 ", b"#4 ")) and r.destination[1] == 5000)
    for i in range(4):
        alice.say(f"m{i}")
    net.advance(1)
    assert any("missed #3-#4" in n for n in display(bob).notices)
    assert bob.missing() == []


def test_duplicatesShownOnce() -> None:
    """With every datagram delivered twice, each message is still shown once."""
    net = MemoryNetwork(seed=1, duplicate=1.0)
    makeRoom(net)
    alice, bob = makePeer(net, 0), makePeer(net, 1)
    alice.join(ROOM, "alice")
    bob.join(ROOM, "bob")
    net.advance(1)
    alice.say("once")
    net.advance(1)
    assert [m[2] for m in display(bob).messages].count("once") == 1


def test_roomForgetsUsAndWeRejoin() -> None:
    """Cut off past the idle timeout, the peer hears not-member at its keepalive and rejoins."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net, RoomPolicy(idleTimeout=10))
    alice = makePeer(net, 0, keepalive=8.0)
    alice.join(ROOM, "alice")
    net.advance(1)
    remove = net.dropIf(lambda r: r.source[0] == "192.0.2.100")
    net.advance(12)
    assert room.members == {}
    remove()
    net.advance(8)
    assert "the room forgot us; joining again" in display(alice).notices
    assert [m.nick for m in room.members.values()] == ["alice"]
    assert alice.state == "joined"


def test_joinErrors() -> None:
    """A taken nick, a full room or no room at all end the attempt with a notice."""
    net = MemoryNetwork(seed=1)
    makeRoom(net, RoomPolicy(maxMembers=2))
    a, b, c = makePeer(net, 0), makePeer(net, 1), makePeer(net, 2)
    a.join(ROOM, "alice")
    net.advance(1)
    b.join(ROOM, "ALICE")
    net.advance(1)
    assert b.state == "idle" and "cannot join: nick-taken ALICE" in display(b).notices
    b.join(ROOM, "bob")
    c.join(ROOM, "carol")
    net.advance(1)
    assert c.state == "idle" and "cannot join: full 2 members" in display(c).notices
    nowhere = makePeer(net, 3, joinRetry=1.0, joinTries=3)
    nowhere.join(("192.0.2.99", 9999), "dave")
    net.advance(10)
    assert nowhere.state == "idle" and display(nowhere).notices[-1].startswith("no answer")
    assert len([r for r in net.datagrams if r.destination[0] == "192.0.2.99"]) == 3


def test_roomCommands() -> None:
    """who, nick, leave; commands outside a room only explain."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net)
    a, b = makePeer(net, 0), makePeer(net, 1)
    a.who()
    a.changeNick("x")
    assert display(a).notices == ["not in a room: /join HOST:PORT NICK"] * 2
    a.join(ROOM, "alice")
    assert a.say("too early") is False
    b.join(ROOM, "bob")
    net.advance(1)
    a.who()
    a.changeNick("alicia")
    net.advance(1)
    assert "in the room: alice, bob" in display(a).notices
    assert "you are now alicia" in display(a).notices and a.nick == "alicia"
    b.changeNick("alicia")
    net.advance(1)
    assert display(b).notices[-1] == "room: nick-taken alicia"
    assert ("*", "alice is now alicia") in [m[1:] for m in display(b).messages]
    a.leave()
    net.advance(1)
    assert [m.nick for m in room.members.values()] == ["bob"]
    # Leaving for plain text: /to leaves the room first.
    b.setPeer(("192.0.2.100", 5000))
    net.advance(1)
    assert room.members == {}
    b.say("direct now")
    net.advance(1)
    assert display(a).messages[-1][1:] == ("192.0.2.101:5000", "direct now")
    assert net.clock.getDelayedCalls() == []


def test_garbageFromTheRoom() -> None:
    """Non-protocol datagrams from the room's address are shown safely; nothing raises."""
    net = MemoryNetwork(seed=1)
    peer = makePeer(net, 0)
    peer.join(ROOM, "alice")
    with capturedLogs() as events:
        peer.datagramReceived(b"\x1b[31mnot a room", ROOM)
        peer.datagramReceived(b"OK JOINED alice x y", ROOM)
        peer.datagramReceived(b"OK PONG", ROOM)
    assert display(peer).messages[0][2] == "\\x1b[31mnot a room"
    assert [e for e in events if e.get("log_failure")] == []
    assert len([e for e in events if "bad reply" in e["log_format"]]) == 2
    peer.transport.stopListening()
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


def test_sendErrorsAreNotices() -> None:
    """A write that fails (IPv6 peer on an IPv4 socket) is a notice, not a crash."""
    net = MemoryNetwork(seed=1)
    peer = makePeer(net, 0)
    peer.setPeer(("::1", 5000))
    assert peer.say("hi") is False
    assert display(peer).notices[-1].startswith("cannot send to [::1]:5000")


def test_lostMessageIsRetriedAndRelayedOnce() -> None:
    """A MSG or its OK SENT lost: the peer repeats it, the room relays it once, in order."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net)
    alice, bob = makePeer(net, 0), makePeer(net, 1)
    alice.join(ROOM, "alice")
    bob.join(ROOM, "bob")
    net.advance(1)
    drops = {b"MSG first": 1, b"OK SENT 3\n": 2}

    def rule(r: object) -> bool:
        data = r.data  # type: ignore[attr-defined]
        if drops.get(data):
            drops[data] -= 1
            return True
        return False

    net.dropIf(rule)
    alice.say("first")
    alice.say("second")
    net.advance(10)
    assert [r.text for r in room.history if r.nick == "alice"] == ["first", "second"]
    assert [m[2] for m in display(bob).messages if m[1] == "alice"] == ["first", "second"]
    assert alice.missing() == []


def test_unacknowledgedMessageGivesUp() -> None:
    """No OK SENT after sendTries: a notice, and the next line goes on."""
    net = MemoryNetwork(seed=1)
    makeRoom(net)
    alice = makePeer(net, 0, sendTries=2)
    alice.join(ROOM, "alice")
    net.advance(1)
    remove = net.dropIf(lambda r: r.data == b"MSG lost")
    alice.say("lost")
    alice.say("kept")
    net.advance(5)
    remove()
    assert display(alice).notices[-1] == "no answer from the room; maybe not sent: lost"
    assert [r.data for r in net.datagrams if r.data.startswith(b"MSG")] == [
        b"MSG lost",
        b"MSG lost",
        b"MSG kept",
    ]
    alice.leave()
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=20))
def test_fuzzPeerFromTheRoom(datagrams: list[bytes]) -> None:
    """Whatever the room's address sends, the peer neither raises nor logs a failure."""
    net = MemoryNetwork(seed=1)
    peer = makePeer(net, 0)
    peer.join(ROOM, "alice")
    peer.datagramReceived(b"OK JOINED alice 1 1", ROOM)
    with capturedLogs() as events:
        for datagram in datagrams:
            peer.datagramReceived(datagram, ROOM)
            peer.datagramReceived(b"#7 00:00:00 <x> " + datagram, ROOM)
            peer.datagramReceived(b"OK " + datagram, ROOM)
    assert [e for e in events if e.get("log_failure")] == []
    peer.transport.stopListening()
