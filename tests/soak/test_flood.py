"""
#16 §4: echo and discovery under a flood from many sources.

In memory (a clock that moves only as the test says, so the buckets' arithmetic is exact):
100,000 datagrams a second from thousands of forged sources, rotating over more sources
than the per-source table holds, with a victim address among them: no source gets more
than its token bucket allows, the global cap holds, a well-behaved client is still
answered. On real sockets (the installed twistd in a namespace of the test's own): a flood
as fast as one process sends from 250 loopback addresses while C{udpsuite echo} measures
its round trips.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from twisted.internet.task import Clock

from tests.soak import figures
from twisted_udpsuite.discovery import wire
from twisted_udpsuite.discovery.protocol import Responder
from twisted_udpsuite.echo.server import EchoPolicy, UDPEchoProtocol

pytestmark = [pytest.mark.soak]

FLOOD_RATE = 100_000
"""Datagrams per (simulated) second."""


class _CountingTransport:
    """Counts what a protocol sends, per destination address."""

    def __init__(self) -> None:
        self.replies: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies[addr[0]] += 1
        self.bytes[addr[0]] += len(data)


def floodSources(rng: random.Random, count: int) -> list[str]:
    """C{count} distinct forged source addresses."""
    return [
        f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in rng.sample(range(1, 1 << 24), count)
    ]


def test_echoFloodFromManySources() -> None:
    """
    Three simulated seconds of 100,000 datagrams a second: most from 6,000 forged sources
    in turn (more than the 4,096 buckets kept), bursts of 500 "from" one victim between
    rounds, and a client that sends 50 a second. Every source gets at most its bucket
    (burst + rate x time), the total stays within the global cap, and the client is
    answered.
    """
    clock = Clock()
    policy = EchoPolicy()
    echo = UDPEchoProtocol(clock, policy)
    transport = _CountingTransport()
    echo.transport = transport  # type: ignore[assignment]
    rng = random.Random(1605)
    sources = floodSources(rng, 6000)
    seconds = 3
    step = 1 / FLOOD_RATE
    victim, client = "192.0.2.99", "192.0.2.7"
    sent: Counter[str] = Counter()
    payload = b"x" * 64
    rotation = 0
    for tick in range(FLOOD_RATE * seconds):
        if tick % (FLOOD_RATE // 50) == 0:
            source = client
        elif tick % 6500 >= 6000:
            source = victim
        else:
            source = sources[rotation % len(sources)]
            rotation += 1
        sent[source] += 1
        echo.datagramReceived(payload, (source, 40000))
        clock.advance(step)
    allowed = policy.burst + policy.rate * seconds  # type: ignore[operator]
    worst = max(transport.replies.values())
    assert worst <= allowed, transport.replies.most_common(3)
    total = sum(transport.replies.values())
    assert total <= policy.globalRate * (1 + seconds)  # type: ignore[operator]  # burst + rate
    answered = transport.replies[client] / sent[client]
    assert answered > 0.1
    figures.record(
        "echo-flood-memory",
        seconds=seconds,
        datagramsPerSecond=FLOOD_RATE,
        sources=len(sources) + 2,
        repliesPerSecond=round(total / seconds),
        globalCap=policy.globalRate,
        victimSent=sent[victim],
        victimReplies=transport.replies[victim],
        bucketAllows=allowed,
        clientAnswered=round(answered, 3),
        dropped=dict(echo.stats.dropped),
    )


def test_responderUnderAProbeFlood() -> None:
    """
    Probes from thousands of sources, and a victim's: every source is answered at most
    as its bucket allows, each answer is no larger than its probe, and no more answers
    wait than the responder's bound.
    """
    clock = Clock()
    responder = Responder("soak", reactor=clock, random=random.Random(7), rate=1.0, burst=4)
    transport = _CountingTransport()
    responder.transport = transport  # type: ignore[assignment]
    rng = random.Random(1606)
    sources = floodSources(rng, 6000)
    seconds = 5
    rate = 20_000
    sent: Counter[str] = Counter()
    probeBytes: Counter[str] = Counter()
    victim = "192.0.2.99"
    instance = b"\1" * wire.INSTANCE_SIZE
    pending = 0
    for tick in range(rate * seconds):
        source = victim if tick % 6100 >= 6000 else sources[tick % len(sources)]
        probe = wire.Message(
            wire.Kind.PROBE,
            instance,
            requestId=tick & 0xFFFF,
            maxDelay=0.01,
            padTo=wire.PROBE_MIN_SIZE + rng.randrange(64),
        ).toBytes()
        sent[source] += 1
        probeBytes[source] += len(probe)
        responder.datagramReceived(probe, (source, 40000))
        pending = max(pending, len(responder._pending))
        clock.advance(1 / rate)
    clock.advance(wire.MAX_DELAY)
    allowed = 4 + 1.0 * (seconds + wire.MAX_DELAY)
    assert max(transport.replies.values()) <= allowed, transport.replies.most_common(3)
    assert all(transport.bytes[s] <= probeBytes[s] for s in transport.bytes)
    assert pending <= 256
    assert clock.getDelayedCalls() == []
    figures.record(
        "responder-flood-memory",
        seconds=seconds,
        probesPerSecond=rate,
        sources=len(sources) + 1,
        answers=sum(transport.replies.values()),
        victimProbes=sent[victim],
        victimAnswers=transport.replies[victim],
        bucketAllows=allowed,
        mostPending=pending,
        suppressed=dict(responder.stats.dropped),
    )
