"""
Many chat room members at once with the suite's own peer (L{ChatPeerProtocol}), run by the
soak test inside its lossy namespace (C{python -m tests.soak.chatload PLAN.json}).

Member I (nick C{mI}, from loopback address 127.0.0.(2 + I % 250)) joins at a seeded moment
of the join window, then says its lines C{mI:0}, C{mI:1}, ... as fast as the room lets it
(the peer sends the next once the room has acknowledged the last), starting at a seeded
moment of the talk window. Then everybody waits until no member misses a line (the peers
ask with RESEND by themselves) and each knows of the newest, for C{settle} seconds at most.
Prints one JSON line: for each member, what it was shown in order, as tokens (C{mJ:K} a
message, C{jJ} "mJ joined").
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from twisted_udpsuite.chat.peer import ChatPeerProtocol, RecordingDisplay

_JOINED = re.compile(r"^(m\d+) joined$")


def token(sender: str, text: str) -> str:
    """What a shown line was: C{mJ:K} or C{jJ} (anything else as it was shown)."""
    if sender == "*":
        match = _JOINED.match(text)
        return f"j{match.group(1)[1:]}" if match else f"* {text}"
    return text


async def run(reactor: Any, plan: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(plan["seed"])
    room = (plan["room"][0], plan["room"][1])
    members = []
    for n in range(plan["members"]):
        # Ten tries for a line, not five: with 10% loss each way a try fails one time in
        # five, and five in a row would lose about one line of 4,000 (with a notice).
        peer = ChatPeerProtocol(
            reactor, RecordingDisplay(), keepalive=plan["keepalive"], sendTries=10
        )
        reactor.listenUDP(0, peer, interface=f"127.0.0.{2 + n % 250}")
        members.append(peer)
    started = time.monotonic()

    def wait(seconds: float) -> Deferred[None]:
        return task.deferLater(reactor, seconds, lambda: None)

    for n, peer in enumerate(members):
        reactor.callLater(rng.uniform(0, plan["joinWindow"]), peer.join, room, f"m{n}")
    await wait(plan["joinWindow"])
    rejoins = 0
    for _ in range(int(plan["settle"] / 0.5)):
        if all(p.state == "joined" for p in members):
            break
        for n, peer in enumerate(members):
            if peer.state == "idle":  # gave up (8 JOINs unanswered): try again, as a user would
                rejoins += 1
                peer.join(room, f"m{n}")
        await wait(0.5)
    joined = time.monotonic() - started

    silent = set(range(len(members)))
    late = 0

    def talk(peer: ChatPeerProtocol, n: int) -> None:
        nonlocal late
        if peer.state != "joined":  # joining (again): say it once in, as a user would
            late += 1
            reactor.callLater(0.5, talk, peer, n)
            return
        silent.discard(n)
        for k in range(plan["lines"]):
            peer.say(f"m{n}:{k}")

    for n, peer in enumerate(members):
        reactor.callLater(rng.uniform(0, plan["talkWindow"]), talk, peer, n)
    await wait(plan["talkWindow"])
    for _ in range(int(plan["settle"] / 0.5)):
        if not silent:
            break
        await wait(0.5)
    # Until everyone has every line up to the newest anyone knows of: a member whose last
    # lines were lost learns of them from its keepalive's answer (OK PONG LAST), which
    # may be lost too; so this takes a few keepalive rounds for the unlucky ones.
    for _ in range(int(plan["settle"] / 0.5)):
        newest = max(p._top for p in members)
        if all(not p._outbox and not p.missing() and p._top == newest for p in members):
            break
        await wait(0.5)
    report = {
        "joinSeconds": joined,
        "rejoins": rejoins,
        "saidLate": late,
        "wall": time.monotonic() - started,
        "states": [p.state for p in members],
        "missing": [len(p.missing()) for p in members],
        "behind": [max(q._top for q in members) - p._top for p in members],
        "unsent": [len(p._outbox) for p in members],
        "shown": [
            [token(sender, text) for _, sender, text in p.display.messages]  # type: ignore[attr-defined]
            for p in members
        ],
        "notices": sorted({n for p in members for n in p.display.notices if "joined" not in n})[
            :20
        ],  # type: ignore[attr-defined]
    }
    for peer in members:
        peer.transport.stopListening()
    return report


if __name__ == "__main__":
    from tests.soak.driver import runWithPlan

    runWithPlan(run)
