"""The IPMsg peer on the in-memory network: presence, the table, messages, defence."""

from __future__ import annotations

import pytest

from tests.helpers import failureResultOf, successResultOf
from tests.ipmsg.helpers import PREFIX, member, raw, stop
from twisted_udpsuite.ipmsg import wire
from twisted_udpsuite.ipmsg.peer import FEATURES, VERSION, MessageTooLong, NotAcknowledged
from twisted_udpsuite.ipmsg.wire import Mode, Packet
from twisted_udpsuite.testing import MemoryNetwork


def test_presence() -> None:
    """
    Each member broadcasts BR_ENTRY at start; the others put it in their
    tables with nick, group, user and host, and answer ANSENTRY by unicast
    after at most a second; no timers are left.
    """
    net = MemoryNetwork(seed=1)
    alice = member(net, 1, "Alice")
    bob = member(net, 2, "Bob")
    net.advance(1.1)
    [seenByBob] = bob.peer.peerList()
    assert (seenByBob.nick, seenByBob.group, seenByBob.user, seenByBob.host) == (
        "Alice", "lab", "alice", "pc-1")  # fmt: skip
    assert seenByBob.address == (f"{PREFIX}.1", 2425)
    [seenByAlice] = alice.peer.peerList()
    assert seenByAlice.nick == "Bob" and seenByAlice.utf8
    answers = [d for d in net.datagrams if b":%d:" % (Mode.ANSENTRY | FEATURES) in d.data]
    assert sorted(a.destination for a in answers) == [(f"{PREFIX}.1", 2425), (f"{PREFIX}.2", 2425)]
    assert not any(d.broadcast for d in answers) and all(a.time <= 1.028 for a in answers)
    assert alice.peer.transport.getBroadcastAllowed() is False
    assert net.clock.getDelayedCalls() == []
    stop(alice, bob)


def test_ownBroadcastIgnored() -> None:
    """A member's broadcast loops back to itself; it does not list or answer itself."""
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    net.advance(2)
    assert alice.peer.peerList() == [] and alice.seen.joined == []
    stop(alice)


def test_exitAndAbsence() -> None:
    """BR_ABSENCE marks a member away (an observer hears it); BR_EXIT removes it."""
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    net.advance(1.1)
    alice.peer.setAbsence("lunch")
    net.advance(0.1)
    [changed] = bob.seen.changed
    assert changed.nick == "Alice" and changed.absent
    alice.peer.leave()
    net.advance(0.1)
    assert bob.peer.peerList() == [] and [r for _, r in bob.seen.left] == ["exit"]
    stop(alice, bob)


def test_hostList() -> None:
    """A peer on another subnet, which the broadcast misses, is reached by unicast entry."""
    net = MemoryNetwork()
    far = net.addHost("198.51.100.7/24")
    from twisted_udpsuite.ipmsg.peer import IPMsgPeer

    farPeer = IPMsgPeer("Far", reactor=far, user="far", host="far", broadcastTargets=[],
                        broadcasts=frozenset())  # fmt: skip
    far.listenUDP(2425, farPeer, interface="")
    alice = member(net, 1, "Alice", hostList=["198.51.100.7"])
    net.advance(1.1)
    assert [p.nick for p in alice.peer.peerList()] == ["Far"]
    assert [p.nick for p in farPeer.peerList()] == ["Alice"]
    entry = next(d for d in net.datagrams if d.destination == ("198.51.100.7", 2425))
    assert int(entry.data.split(b":")[4]) & wire.DIALUPOPT
    alice.peer.setAbsence("out")
    alice.peer.leave()
    alice.peer.leave()  # once is enough
    net.advance(0.1)
    modes = [int(d.data.split(b":")[4]) & 0xFF for d in net.datagrams
             if d.destination == ("198.51.100.7", 2425)]  # fmt: skip
    assert modes == [Mode.BR_ENTRY, Mode.BR_ABSENCE, Mode.BR_EXIT]
    assert farPeer.peerList() == []  # the goodbye reached it
    farPeer.transport.stopListening()
    stop(alice)


def test_hostListRefusesBroadcasts() -> None:
    """A host list can name hosts and small networks, never a broadcast address."""
    from twisted_udpsuite.ipmsg.peer import IPMsgPeer

    assert IPMsgPeer("x", hostList=["10.1.2.0/30"]).hostList == ["10.1.2.1", "10.1.2.2"]
    with pytest.raises(ValueError):
        IPMsgPeer("x", hostList=["255.255.255.255"])
    with pytest.raises(ValueError):
        IPMsgPeer("x", hostList=["10.0.0.0/16"])


def test_messageAcknowledged() -> None:
    """sendMessage fires with the packet number on RECVMSG; the text arrives once."""
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    net.advance(1.1)
    d = alice.peer.sendMessage(bob.address, "你好 hello")
    number = net.runUntil(d)
    [message] = bob.seen.messages
    assert (message.text, message.packetNo, message.peer.nick) == ("你好 hello", number, "Alice")
    assert alice.peer.stats.acknowledged == 1
    assert net.clock.getDelayedCalls() == []
    stop(alice, bob)


@pytest.mark.parametrize("seed", range(5))
def test_lossAndDuplication(seed: int) -> None:
    """
    Under 30% loss and 30% duplication, five messages are all acknowledged
    (retries) and each is shown exactly once.
    """
    net = MemoryNetwork(seed=seed, loss=0.3, duplicate=0.3)
    alice = member(net, 1, "Alice", attempts=10)
    bob = member(net, 2, "Bob")
    net.advance(1.1)
    for i in range(5):
        net.runUntil(alice.peer.sendMessage(bob.address, f"line {i}"))
    net.advance(1)
    assert [m.text for m in bob.seen.messages] == [f"line {i}" for i in range(5)]
    assert net.clock.getDelayedCalls() == []
    stop(alice, bob)


def test_unansweredTableBounded() -> None:
    """
    Past C{maxUnanswered} packets awaiting an answer, a new one fails at once (nothing
    sent, nothing kept, counted); those already waiting keep their retries, and once one
    ends there is room again. A flood of sealed messages or ASKSHAREDs from many forged
    sources would otherwise grow the retry table at the full accepted rate.
    """
    net = MemoryNetwork()
    alice = member(net, 1, "Alice", maxUnanswered=2)
    nobody = [(f"{PREFIX}.{n}", 2425) for n in (7, 8, 9)]
    first, second = (alice.peer.sendMessage(a, "anyone?") for a in nobody[:2])
    third = alice.peer.sendMessage(nobody[2], "anyone?")
    failureResultOf(third, NotAcknowledged)
    assert not [r for r in net.datagrams if r.destination == nobody[2]]
    assert alice.peer.stats.dropped == {"unanswered table full": 1}
    net.advance(10)
    failureResultOf(first, NotAcknowledged)
    failureResultOf(second, NotAcknowledged)
    assert len([r for r in net.datagrams if r.destination == nobody[0]]) == 6
    fourth = alice.peer.sendMessage(nobody[2], "now?")
    net.advance(10)
    failureResultOf(fourth, NotAcknowledged)
    assert len([r for r in net.datagrams if r.destination == nobody[2]]) == 6
    assert net.clock.getDelayedCalls() == []
    stop(alice)


def test_notAcknowledged() -> None:
    """
    With nobody there, the message is sent C{attempts} times, 0.75 s apart,
    retries marked RETRYOPT, then fails with L{NotAcknowledged}.
    """
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    d = alice.peer.sendMessage((f"{PREFIX}.9", 2425), "anyone?")
    net.advance(10)
    failureResultOf(d, NotAcknowledged)
    sent = [r for r in net.datagrams if r.destination == (f"{PREFIX}.9", 2425)]
    assert len(sent) == 6 and [r.time for r in sent] == [0.75 * i for i in range(6)]
    commands = [int(r.data.split(b":")[4]) for r in sent]
    assert not commands[0] & wire.RETRYOPT and all(c & wire.RETRYOPT for c in commands[1:])
    assert alice.peer.stats.unacknowledged == 1
    assert net.clock.getDelayedCalls() == []
    stop(alice)


def test_cancelStopsRetries() -> None:
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    d = alice.peer.sendMessage((f"{PREFIX}.9", 2425), "anyone?")
    d.cancel()
    d.addErrback(lambda f: None)
    net.advance(0.1)
    assert net.clock.getDelayedCalls() == []
    stop(alice)


def test_tooLong() -> None:
    """A message that does not fit in 8 KiB fails at once; nothing is sent."""
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    before = len(net.datagrams)
    failureResultOf(alice.peer.sendMessage((f"{PREFIX}.9", 2425), "x" * 9000), MessageTooLong)
    assert len(net.datagrams) == before
    stop(alice)


def feiq(number: int, command: int, text: str) -> bytes:
    return f"1_lbt4_10#128#001122334455#0#0#0:{number}:张三:PC-01:{command}:{text}".encode("gbk")


def test_feiqMessage() -> None:
    """
    A FeiQ datagram (C{1_lbt4_...} version, GBK body, command 288) is shown as
    its Chinese text and acknowledged with RECVMSG naming its packet number; a
    repeat of it is acknowledged again but shown once.
    """
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    sock = raw(net, 5)
    sock.send(feiq(1234, 288, "你好，鲍勃"), bob.address)
    sock.send(feiq(1234, 288, "你好，鲍勃"), bob.address)
    net.advance(0.1)
    [message] = bob.seen.messages
    assert message.text == "你好，鲍勃" and message.peer.user == "张三"
    acks = [p for p, _ in sock.received if p.mode == Mode.RECVMSG]
    assert [a.body for a in acks] == ["1234", "1234"]
    assert message.peer.encoding == "gb18030"  # learnt from its text
    stop(bob)


@pytest.mark.parametrize("option", [wire.BROADCASTOPT, wire.AUTORETOPT])
def test_noAckForBroadcastOrAutoReply(option: int) -> None:
    """Messages flagged BROADCASTOPT or AUTORETOPT are shown but never acknowledged."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    sock = raw(net, 5)
    sock.send(feiq(7, Mode.SENDMSG | wire.SENDCHECKOPT | option, "auto"), bob.address)
    net.advance(0.1)
    assert [m.text for m in bob.seen.messages] == ["auto"]
    assert [p for p, _ in sock.received if p.mode == Mode.RECVMSG] == []
    stop(bob)


def test_sealedMessage() -> None:
    """
    A sealed message arrives sealed; opening it sends READMSG, the sender
    hears that it was opened and answers ANSREADMSG, which ends the READMSG retries.
    """
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    net.advance(1.1)
    number = net.runUntil(alice.peer.sendMessage(bob.address, "secret", sealed=True))
    [message] = bob.seen.messages
    assert message.sealed and message.readCheck
    net.runUntil(bob.peer.markRead(message))
    assert [(p.nick, n) for p, n in alice.seen.opened] == [("Bob", number)]
    assert net.clock.getDelayedCalls() == []
    stop(alice, bob)


def test_getInfo() -> None:
    """GETINFO is answered by SENDINFO with our version; GETABSENCEINFO with the status."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    bob.peer.setAbsence("in a meeting")
    sock = raw(net, 5)
    sock.send(b"1:1:u:h:%d:" % Mode.GETINFO, bob.address)
    sock.send(b"1:2:u:h:%d:" % Mode.GETABSENCEINFO, bob.address)
    net.advance(0.1)
    bodies = {p.mode: p.body for p, _ in sock.received}
    assert bodies[Mode.SENDINFO] == VERSION
    assert bodies[Mode.SENDABSENCEINFO] == "in a meeting"
    stop(bob)


def test_noAnswerToBroadcastSources() -> None:
    """
    A datagram whose source is a broadcast or multicast address (forged) is
    dropped unread: no ack, no table entry, no message.
    """
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    before = len(net.datagrams)
    for source in (f"{PREFIX}.255", "255.255.255.255", "224.0.0.1", f"{PREFIX}.0"):
        bob.peer.datagramReceived(feiq(1, 288, "hi"), (source, 2425))
        bob.peer.datagramReceived(b"1:1:u:h:1:nick\0grp", (source, 2425))
    net.advance(5)
    assert len(net.datagrams) == before and bob.peer.peerList() == []
    assert bob.seen.messages == [] and bob.peer.stats.dropped == {"source": 8}
    stop(bob)


def test_rateLimitPerSource() -> None:
    """A flood from one address is cut to the burst; another address still gets through."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob", rate=1, burst=5)
    flood, other = raw(net, 5), raw(net, 6)
    for i in range(50):
        flood.send(feiq(100 + i, 288, f"spam {i}"), bob.address)
    other.send(feiq(1, 288, "hello"), bob.address)
    net.advance(0.1)
    assert len(bob.seen.messages) == 6 and bob.seen.messages[-1].text == "hello"
    assert bob.peer.stats.dropped["rate"] == 45
    stop(bob)


def test_tableBoundedAndExpiring() -> None:
    """At most C{maxPeers} are kept (the least recently heard goes); silent ones expire."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob", maxPeers=2, peerLifetime=60)
    socks = [raw(net, n) for n in (5, 6, 7)]
    for n, sock in zip((5, 6, 7), socks, strict=True):
        sock.send(b"1:%d:u%d:h:%d:nick%d\0grp" % (n, n, Mode.ANSENTRY, n), bob.address)
        net.advance(1)
    assert [p.nick for p in bob.peer.peerList()] == ["nick6", "nick7"]
    assert [(p.nick, r) for p, r in bob.seen.left] == [("nick5", "evicted")]
    net.advance(60)
    assert bob.peer.peerList() == []
    assert [r for _, r in bob.seen.left] == ["evicted", "expired", "expired"]
    stop(bob)


def test_garbageThenWorking() -> None:
    """Garbage and oversized datagrams are dropped; the peer goes on working."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    sock = raw(net, 5)
    for junk in (b"", b"\xff" * 10, b"1:x:y", b"2:1:u:h:32:hi", b"1:1:u:h:32:" + b"a" * 40000):
        sock.send(junk, bob.address)
    sock.send(feiq(3, 288, "still here?"), bob.address)
    net.advance(0.1)
    assert [m.text for m in bob.seen.messages] == ["still here?"]
    assert bob.peer.stats.dropped == {"malformed": 4, "too-long": 1}
    stop(bob)


def test_utf8ToCapablePeers() -> None:
    """A peer that says CAPUTF8OPT gets UTF8OPT packets; iptux (which does not) gets UTF-8
    without the flag, since its entry says its code page is utf-8."""
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    sock = raw(net, 5)
    sock.send(b"1_iptux 0.8.3:1:tux:box:257:Tuxy\0lab\0icon-tux.png\0utf-8\0", alice.address)
    net.advance(0.1)
    [tux] = alice.peer.peerList()
    assert (tux.nick, tux.group, tux.encoding, tux.absent) == ("Tuxy", "lab", "utf-8", False)
    d = alice.peer.sendMessage(tux, "ünïcode")
    net.advance(0.1)
    packet = next(p for p, _ in sock.received if p.mode == Mode.SENDMSG)
    assert packet.body == "ünïcode" and not packet.has(wire.UTF8OPT)
    sock.send(Packet("1", 9, "tux", "box", Mode.RECVMSG, str(packet.packetNo)).toBytes(),
              alice.address)  # fmt: skip
    net.advance(1)
    assert successResultOf(d) == packet.packetNo
    assert net.clock.getDelayedCalls() == []
    stop(alice)


def test_twoPeersOfOneUserOnOneHost() -> None:
    """
    Two peers of the same user and host (same packet numbers in the same
    second) are not mistaken for each other's looped-back broadcasts.
    """
    net = MemoryNetwork()
    host = net.addHost(f"{PREFIX}.1/24")
    from twisted_udpsuite.ipmsg.peer import IPMsgPeer, RecordingObserver

    peers = [IPMsgPeer(n, reactor=host, user="u", host="h", broadcastTargets=[]) for n in "ab"]
    seen = RecordingObserver()
    peers[1].addObserver(seen)
    host.listenUDP(2425, peers[0], interface="")
    host.listenUDP(2426, peers[1], interface="")
    assert net.runUntil(peers[0].sendMessage((f"{PREFIX}.1", 2426), "hi")) >= 0
    assert [m.text for m in seen.messages] == ["hi"]
    for p in peers:
        p.transport.stopListening()
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


def test_dualStackSocket() -> None:
    """
    On an IPv6 wildcard socket (C{--interface ::}, or one systemd binds on C{[::]}),
    IPv4 members arrive V4-mapped; they are keyed by their IPv4 address and
    answered through the mapped one.
    """
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    bob = member(net, 2, "Bob", start=False)
    bob.host.listenUDP(2425, bob.peer, interface="::")
    net.advance(1.1)
    assert [p.address for p in bob.peer.peerList()] == [(f"{PREFIX}.1", 2425)]
    assert net.runUntil(alice.peer.sendMessage(bob.address, "hi")) >= 0
    net.runUntil(bob.peer.sendMessage(alice.address, "hello"))
    assert [m.text for m in alice.seen.messages] == ["hello"]
    stop(alice, bob)
    net.advance(1)
    assert net.clock.getDelayedCalls() == []
