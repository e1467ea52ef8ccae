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
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.soak import figures
from tests.soak.harness import drive, scrape, tracebacks
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
    Two simulated seconds of 100,000 datagrams a second: most from 6,000 forged sources
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
    seconds = 2
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
    seconds = 3
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


ECHO_PORT = 7007
METRICS_PORT = 9171
_RTT = re.compile(rb"time=([0-9.]+) ms")


async def ping(reactor: Any, prefix: list[str], count: int) -> tuple[int, list[float]]:
    """C{udpsuite echo} with C{count} probes 50 ms apart: (replies, round trips in ms)."""
    argv = [*prefix, venvScript("udpsuite"), "echo", f"127.0.0.1:{ECHO_PORT}"]
    argv += ["-c", str(count), "-i", "0.05", "-W", "1"]
    out, err, code = await runProcess(reactor, argv, timeout=60)
    rtts = sorted(float(m) for m in _RTT.findall(out))
    return len(rtts), rtts


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_echoFloodOnRealSockets(
    reactor: Any, tmp_path: Path, loopbackNamespace: list[str]
) -> None:
    """
    The installed echo server with its default limits, flooded from 250 loopback addresses
    as fast as the plan says (100,000 datagrams a second), while C{udpsuite echo} pings it:
    no source gets more replies than its bucket, the global cap holds, the pinging client
    is answered during the flood and fully after it, the process stays small.
    """
    requirePeer("curl")
    inNs = loopbackNamespace
    argv = [*inNs, venvScript("twistd"), "-n", "--pidfile=", "udpsuite"]
    argv += ["--metrics-port", str(METRICS_PORT), "echo", "--port", str(ECHO_PORT)]
    argv += ["--interface", "127.0.0.1", "--no-tcp"]
    server = BackgroundProcess(reactor, argv)
    seconds = figures.seconds(3.0, 20.0)
    plan = {
        "target": ["127.0.0.1", ECHO_PORT],
        "sources": 250,
        "rate": FLOOD_RATE,
        "seconds": seconds,
        "size": 64,
        "seed": 1607,
    }
    try:
        await server.waitFor(b"echo listening")
        calm, calmRtts = await ping(reactor, inNs, 20)
        before = figures.rss(server.pid)
        flooding = drive(reactor, inNs, "flood", plan, tmp_path / "plan.json", seconds + 60)
        flood = Deferred.fromCoroutine(flooding)
        probes = int(seconds * 20) - 10
        answered, rtts = await ping(reactor, inNs, probes)
        result = await flood
        after, afterRtts = await ping(reactor, inNs, 20)
        metrics = await scrape(reactor, inNs, METRICS_PORT)
        memory = figures.rss(server.pid)
    finally:
        await server.stop()
    policy = EchoPolicy()
    perSource = policy.burst + policy.rate * seconds  # type: ignore[operator]
    assert max(result["replies"]) <= perSource, max(result["replies"])
    assert all(
        r <= s
        for r, s in zip(result["replyBytes"], [result["bytesSent"] // 250] * 250, strict=True)
    )
    echoed = metrics["udpsuite_echo_datagrams_total"]
    window = seconds + 5  # the server's whole run, pings included
    assert echoed <= policy.globalRate * (1 + window)  # type: ignore[operator]
    assert calm == 20 and after == 20
    # What the server cannot read in time the kernel drops, the client's probes alike; of
    # what it reads, the global cap answers its share. A tenth answered is far below both.
    assert answered >= probes // 10, (answered, probes)
    assert not tracebacks(server.output)
    assert memory["rss"] - before["rss"] < 16 * 1024
    refused = {k: int(v) for k, v in metrics.items() if k.startswith("udpsuite_echo_refused_total")}
    figures.record(
        "echo-flood-sockets",
        sources=250,
        offeredPerSecond=round(result["rate"]),
        seconds=round(result["seconds"], 1),
        sent=result["sent"],
        echoed=int(echoed),
        refused=refused,
        mostRepliesToOneSource=max(result["replies"]),
        bucketAllows=perSource,
        clientAnsweredDuringFlood=f"{answered}/{probes}",
        clientRttMsCalm=[round(percentile(calmRtts, 0.5), 3), round(percentile(calmRtts, 0.99), 3)],
        clientRttMsFlood=[round(percentile(rtts, 0.5), 3), round(percentile(rtts, 0.99), 3)],
        rssBeforeKiB=before["rss"],
        rssPeakKiB=memory["peak"],
        rssAfterKiB=memory["rss"],
    )
