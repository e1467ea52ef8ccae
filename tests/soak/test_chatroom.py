"""
#16 §3: the chat room with 500 members talking at their rate limit through 10% random loss
(the installed twistd and the suite's own peers, in a namespace of the test's own); its
limits under a flood of non-members; its memory bounded by --history and --max-members.

CI: 500 members, one line each, joining over 5 s and talking over 10 s;
C{UDPSUITE_SOAK=full}: 500 members, four lines each.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.process import BackgroundProcess, venvScript
from tests.soak import figures
from tests.soak.harness import drive, scrape, tracebacks
from tests.tftp import lossnet
from twisted_udpsuite.chat.room import ChatRoomProtocol, RoomPolicy

pytestmark = [pytest.mark.soak]

ROOM_PORT = 9999
METRICS_PORT = 9170
MEMBERS = 500

_RELAYED = re.compile(rb"#(\d+) (?:<(m\d+)> \([^)]*\) (m\d+:\d+)|\* (m\d+) joined)$", re.M)


def roomLines(log: bytes) -> dict[int, str]:
    """What the room relayed, from its log: sequence number -> token (C{mJ:K} or C{jJ})."""
    lines = {}
    for match in _RELAYED.finditer(log):
        seq = int(match.group(1))
        lines[seq] = (
            match.group(3).decode() if match.group(3) else "j" + match.group(4)[1:].decode()
        )
    return lines


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_fiveHundredMembersThroughLoss(reactor: Any, tmp_path: Path) -> None:
    """
    500 members join, then each says its lines as fast as the room's rate limit lets it,
    with 10% of all datagrams lost each way: every member ends up shown every line relayed
    since it joined (RESEND fills the gaps), none twice; each member's lines were relayed
    in the order it typed them; the room's process stays small and logs no traceback.
    """
    lines = figures.size(1, 4)
    plan = {
        "room": ["127.0.0.1", ROOM_PORT],
        "members": MEMBERS,
        "lines": lines,
        "seed": 1603,
        "keepalive": 3.0,
        "joinWindow": 5.0,
        "talkWindow": figures.seconds(10.0, 30.0),
        "settle": 60.0,
    }
    argv = [venvScript("twistd"), "-n", "--pidfile=", "udpsuite"]
    argv += ["--metrics-port", str(METRICS_PORT), "chatroom", "--port", str(ROOM_PORT)]
    argv += ["--interface", "127.0.0.1", "--max-members", str(MEMBERS), "--history", "4000"]
    async with lossnet.namespace(reactor, lossnet.RANDOM_LOSS.format(every=10)) as inNs:
        room = BackgroundProcess(reactor, [*inNs, *argv])
        try:
            await room.waitFor(b"chat room listening")
            before = figures.rss(room.pid)
            report = await drive(reactor, inNs, "chatload", plan, tmp_path / "plan.json", 300)
            memory = figures.rss(room.pid)
            metrics = await scrape(reactor, inNs, METRICS_PORT)
        finally:
            await room.stop()
    relayed = roomLines(room.output)
    assert report["states"] == ["joined"] * MEMBERS, Counter(report["states"])
    assert len(relayed) == max(relayed), "every relayed line logged"
    seqsOf: dict[str, list[int]] = {}
    for seq, token in sorted(relayed.items()):
        seqsOf.setdefault(token, []).append(seq)
    # Every line typed was relayed; twice only if its retries came more than 5 s apart
    # (the room's duplicate window: a machine too busy to run the peers' 1 s timers).
    typed = [f"j{n}" for n in range(MEMBERS)]
    typed += [f"m{n}:{k}" for n in range(MEMBERS) for k in range(lines)]
    assert sorted(seqsOf) == sorted(typed), (len(relayed), report["notices"])
    twice = len(relayed) - len(typed)
    assert twice <= 5, twice
    assert report["unsent"] == [0] * MEMBERS and report["missing"] == [0] * MEMBERS
    assert report["behind"] == [0] * MEMBERS
    outOfOrder = 0
    for n, shown in enumerate(report["shown"]):
        counts = Counter(shown)
        assert all(counts[t] <= len(seqsOf[t]) for t in counts), (n, counts.most_common(3))
        joinedAt = seqsOf[f"j{n}"][0]
        own = {seq for k in range(lines) for seq in seqsOf[f"m{n}:{k}"]}
        expected = Counter(relayed[s] for s in range(joinedAt, max(relayed) + 1) if s not in own)
        assert not expected - counts, (n, sorted(expected - counts)[:10])
        order = [seqsOf[t][0] for t in shown]
        outOfOrder += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    for n in range(MEMBERS):
        firsts = [seqsOf[f"m{n}:{k}"][0] for k in range(lines)]
        assert firsts == sorted(firsts), n  # each member's lines in the order typed
    assert not tracebacks(room.output)
    shownTotal = sum(len(s) for s in report["shown"])
    figures.record(
        "chatroom-load",
        members=MEMBERS,
        linesEach=lines,
        relayed=len(relayed),
        relayedTwice=twice,
        shownInAll=shownTotal,
        shownAfterALaterLine=outOfOrder,
        resendRequests=int(metrics["udpsuite_chatroom_resend_requests_total"]),
        linesResent=int(metrics["udpsuite_chatroom_lines_resent_total"]),
        loss="10% each way",
        joinSeconds=round(report["joinSeconds"], 1),
        rejoins=report["rejoins"],
        saidLate=report["saidLate"],
        wall=round(report["wall"], 1),
        rssBeforeKiB=before["rss"],
        rssPeakKiB=memory["peak"],
        rssAfterKiB=memory["rss"],
    )


class _RecordingTransport:
    """What a protocol under test wrote, by destination."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def _floodDatagram(rng: random.Random, member: bytes) -> bytes:
    """A seeded datagram a non-member might send: commands, their mutations, garbage."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 1500))
    if kind == 1:
        return rng.choice([b"WHO", b"PING", b"LEAVE", b"RESEND 1", b"RESEND 1 500", b"MSG hi"])
    if kind == 2:
        return b"JOIN " + rng.choice([b"x" * rng.randrange(1, 40), b"bad nick", member, b""])
    if kind == 3:
        return b"JOIN flood" + str(rng.randrange(10**6)).encode() + b" " * rng.randrange(200)
    data = bytearray(rng.choice([b"RESEND 3 9", b"NICK abc", b"hello there", b"JOIN zed"]))
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_boundedByHistoryAndMembersNoAmplification() -> None:
    """
    A full room (--max-members) with more lines than --history, flooded by 30,000 seeded
    datagrams from 20,000 forged non-member sources: no reply to a non-member is larger
    than its request (nor, in all, than what they sent), the tables stay at their bounds,
    and memory does not grow from one flood to the next.
    """
    import tracemalloc

    from twisted.internet.task import Clock

    clock = Clock()
    policy = RoomPolicy(maxMembers=50, history=100, backlog=20, rate=1000, burst=1000)
    room = ChatRoomProtocol(clock, policy)
    transport = _RecordingTransport()
    room.makeConnection(transport)  # type: ignore[arg-type]
    members = [(f"198.51.100.{n}", 5000) for n in range(1, 51)]
    for n, address in enumerate(members):
        room.datagramReceived(f"JOIN m{n}".encode(), address)
    for line in range(300):
        clock.advance(0.01)
        room.datagramReceived(f"line {line}".encode(), members[line % 50])
    assert len(room.members) == 50 and room.lastSeq == 350
    assert len(room.history) == 100 and room.history[0].seq == 251
    rng = random.Random(1604)
    received = replied = 0

    def flood(count: int) -> None:
        nonlocal received, replied
        for _ in range(count):
            source = (f"10.{rng.randrange(3)}.{rng.randrange(256)}.{rng.randrange(1, 30)}", 4000)
            data = _floodDatagram(rng, b"m7")
            del transport.written[:]
            room.datagramReceived(data, source)
            answer = sum(len(d) for d, to in transport.written if to == source)
            assert answer <= len(data), (data, transport.written)
            received += len(data)
            replied += answer
            assert not [to for _, to in transport.written if to != source and to not in members]
            clock.advance(0.0005)

    flood(10_000)
    tracemalloc.start()
    try:
        flood(10_000)
        first = tracemalloc.get_traced_memory()[0]
        flood(10_000)
        second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(room.members) == 50 and set(room.members) == set(members)
    assert len(room.history) == 100
    assert len(room._strangerLimiter) <= room._strangerLimiter.maxSources
    assert all(len(m.recent) <= 16 for m in room.members.values())
    assert 0 < replied <= received
    assert second - first < 256 * 1024, (first, second)
    del transport.written[:]
    room.datagramReceived(b"PING", members[0])  # the members are still served
    assert transport.written == [(b"OK PONG 350\n", members[0])]
    figures.record(
        "chatroom-bounds",
        members=len(room.members),
        history=len(room.history),
        floodDatagrams=30_000,
        floodSources=20_000,
        bytesReceived=received,
        bytesReplied=replied,
        strangerBuckets=len(room._strangerLimiter),
        memoryGrowthBytes=second - first,
    )
