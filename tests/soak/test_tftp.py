"""
#16 §1: the TFTP server (the installed twistd, in a namespace of the test's own) under many
transfers at once through 10% random loss each way, and killed in the middle of uploads.

CI runs 40 downloads and 8 uploads at once; C{UDPSUITE_SOAK=full} (C{bench/soak.py}) runs
the issue's 200 and 20 with larger files.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, venvScript
from tests.soak import figures
from tests.soak.harness import REPO, drive, scrape, sleep, tracebacks
from tests.tftp import lossnet
from twisted_udpsuite.paths import isTemporaryName

pytestmark = [pytest.mark.soak, pytest.mark.integration]

METRICS_PORT = 9169


@asynccontextmanager
async def tftpServer(
    reactor: Any, inNs: list[str], root: Path, *options: str
) -> AsyncIterator[BackgroundProcess]:
    """twistd udpsuite tftp in the namespace, with its metrics on L{METRICS_PORT}."""
    argv = [*inNs, venvScript("twistd"), "-n", "--pidfile=", "udpsuite"]
    argv += ["--metrics-port", str(METRICS_PORT), "tftp", "--port", str(lossnet.PORT)]
    argv += ["--interface", "127.0.0.1", "--root", str(root), *options]
    process = BackgroundProcess(reactor, argv)
    try:
        await process.waitFor(b"tftp listening")
        await process.waitFor(b"metrics listening")
        yield process
    finally:
        await process.stop()


def loadPlan(tmp_path: Path, root: Path, **plan: Any) -> dict[str, Any]:
    """A plan for L{tests.soak.tftpload}: serve C{root}, upload C{tmp_path/up}."""
    (tmp_path / "out").mkdir()
    return {
        "server": ["127.0.0.1", lossnet.PORT],
        "root": str(root),
        "uploads": str(tmp_path / "up"),
        "out": str(tmp_path / "out"),
        **plan,
    }


def makeFiles(directory: Path, rng: random.Random, sizes: list[int], prefix: str) -> None:
    directory.mkdir(exist_ok=True)
    for n, size in enumerate(sizes):
        (directory / f"{prefix}{n}.bin").write_bytes(rng.randbytes(size))


@pytest_twisted.ensureDeferred
async def test_manyTransfersThroughLoss(reactor: Any, tmp_path: Path) -> None:
    """
    Downloads and uploads at once, mixed block and window sizes, through 10% loss each way:
    every file arrives byte-identical; afterwards no transfer is left running (the metrics'
    gauge), no file descriptor is left open, and memory is back near where it started.
    """
    requirePeer("curl")
    rng = random.Random(16)
    downloads = figures.size(40, 200)
    uploads = figures.size(8, 20)
    scale = figures.size(1, 4)
    root = tmp_path / "root"
    # Sizes around the block edges and a few larger files (more with the full run).
    makeFiles(root, rng, [0, 1, 511, 512, 513, 1428, 8192 * 3, 20_000, 48_000 * scale], "f")
    makeFiles(tmp_path / "up", rng, [rng.randrange(1, 40_000 * scale) for _ in range(uploads)], "u")
    plan = loadPlan(tmp_path, root, downloads=downloads, seed=16, clients=32)
    async with lossnet.namespace(reactor, lossnet.RANDOM_LOSS.format(every=10)) as inNs:
        async with tftpServer(reactor, inNs, root, "--writable") as server:
            # A first small round, so that what a first transfer sets up once is not
            # counted as growth.
            warm = tmp_path / "warm"
            warm.mkdir()
            await drive(
                reactor,
                inNs,
                "tftpload",
                {**plan, "downloads": 2, "uploads": str(warm)},
                tmp_path / "plan.json",
                120,
            )
            await settle(reactor, inNs)
            before = figures.openFiles(server.pid)
            memoryBefore = figures.rss(server.pid)
            summary = await drive(
                reactor, inNs, "tftpload", plan, tmp_path / "plan.json", figures.seconds(150, 600)
            )
            peak = figures.rss(server.pid)["peak"]
            metrics = await settle(reactor, inNs)
            # A finished upload's port stays up to 160 s (ServerPolicy.dally: curl resends
            # a last block after 72 s) unless the client's closed port answers the one
            # unasked repeat of the final ACK; the full run waits for them all to go.
            dallying = {f"udp 127.0.0.1:{t['serverPort']}" for t in summary["transfers"]}
            dallying -= {
                f"udp 127.0.0.1:{t['serverPort']}"
                for t in summary["transfers"]
                if t["kind"] == "get"
            }
            after = await descriptorsBack(
                reactor, server.pid, before, figures.seconds(10, 175), allowed=dallying
            )
            memoryAfter = figures.rss(server.pid)
        output = server.output
    failed = [t for t in summary["transfers"] if not t["ok"]]
    assert not failed, failed[:5]
    assert len(summary["transfers"]) == downloads + uploads
    for path in (tmp_path / "up").iterdir():
        assert (root / path.name).read_bytes() == path.read_bytes(), path.name
    assert not [p for p in root.iterdir() if isTemporaryName(p.name)]
    ended = {k: v for k, v in metrics.items() if k.startswith("udpsuite_tftp_transfers_total{")}
    good = sum(v for k, v in ended.items() if 'outcome="completed' in k)
    assert good == sum(ended.values()) == downloads + uploads + 2, ended
    assert not tracebacks(output)
    retransmits = metrics['udpsuite_tftp_retransmits_total{direction="download"}']
    retransmits += metrics['udpsuite_tftp_retransmits_total{direction="upload"}']
    figures.record(
        "tftp-load",
        downloads=downloads,
        uploads=uploads,
        loss="10% each way",
        wall=round(summary["wall"], 1),
        slowest=round(max(t["seconds"] for t in summary["transfers"]), 1),
        serverRetransmits=int(retransmits),
        clientRetransmits=sum(t.get("retransmits", 0) for t in summary["transfers"]),
        rssBeforeKiB=memoryBefore["rss"],
        rssPeakKiB=peak,
        rssAfterKiB=memoryAfter["rss"],
        fdsBefore=len(before),
        fdsAfter=len(after),
        dallyingUploadPorts=len(after) - len(before),
    )
    # Bounded: a few MiB of buffers and sessions at the peak, given back or reused after.
    assert memoryAfter["rss"] - memoryBefore["rss"] < 32 * 1024, (memoryBefore, memoryAfter)


async def settle(reactor: Any, inNs: list[str], timeout: float = 30) -> dict[str, float]:
    """Wait until the server runs no transfer (uploads dally a little); its metrics then."""
    for _ in range(int(timeout / 0.5)):
        metrics = await scrape(reactor, inNs, METRICS_PORT)
        if metrics.get("udpsuite_tftp_active_transfers") == 0:
            return metrics
        await sleep(reactor, 0.5)
    raise AssertionError(f"transfers still running after {timeout} s: {metrics}")


async def descriptorsBack(
    reactor: Any,
    pid: int,
    before: dict[str, str],
    timeout: float,
    allowed: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, str]:
    """
    The process's descriptors once they are those of C{before} again, or, at C{timeout},
    those of C{before} and some of C{allowed}; fails if others are left.
    """
    for _ in range(int(timeout / 0.25)):
        now = figures.openFiles(pid)
        if sorted(now.values()) == sorted(before.values()):
            return now
        await sleep(reactor, 0.25)
    left = list(now.values())
    for target in before.values():
        left.remove(target)
    assert set(left) <= allowed, (sorted(left), before)
    return now


@pytest_twisted.ensureDeferred
async def test_serverKilledDuringUploads(reactor: Any, tmp_path: Path) -> None:
    """
    twistd is SIGKILLed at a seeded moment while 20 uploads run through 10% loss: every
    name holds either nothing or the whole upload; a restart names the cut uploads' files
    (too young to be taken for litter), a start an hour later removes them, and the cut
    uploads then go through whole.
    """
    requirePeer("curl")
    rng = random.Random(1616)
    root = tmp_path / "root"
    root.mkdir()
    makeFiles(tmp_path / "up", rng, [rng.randrange(50_000, 400_000) for _ in range(20)], "u")
    plan = loadPlan(tmp_path, root, downloads=0, seed=1616, clients=8)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    killAt = rng.uniform(0.5, 2.5)  # seconds after the first upload's file appears
    async with lossnet.namespace(reactor, lossnet.RANDOM_LOSS.format(every=10)) as inNs:
        async with tftpServer(reactor, inNs, root, "--writable") as server:
            argv = [*inNs, sys.executable, "-m", "tests.soak.tftpload", str(tmp_path / "plan.json")]
            uploader = BackgroundProcess(
                reactor, argv, env={"PYTHONPATH": str(REPO)}, path=str(REPO)
            )
            try:
                for _ in range(200):
                    if any(isTemporaryName(p.name) for p in root.iterdir()):
                        break
                    await sleep(reactor, 0.05)
                await sleep(reactor, killAt)
                server.signal("KILL")
                out, err, code = await server.ended()
                assert code == -9
            finally:
                uploader.signal("KILL")
                await uploader.ended()
        whole, cut = [], []
        for source in sorted((tmp_path / "up").iterdir()):
            if (root / source.name).exists():
                assert (root / source.name).read_bytes() == source.read_bytes(), source.name
                whole.append(source.name)
            else:
                cut.append(source.name)
        temporary = sorted(p for p in root.iterdir() if isTemporaryName(p.name))
        # Each temporary file is one cut upload's (".NAME.<hex>.part"). An upload still
        # queued behind the load's 8 clients when the kill came never reached the server:
        # cut, with no file at all.
        started = [p.name[1:].rsplit(".", 2)[0] for p in temporary]
        assert temporary and len(set(started)) == len(started), (temporary, cut)
        assert set(started) <= set(cut), (started, cut)
        async with tftpServer(reactor, inNs, root, "--writable") as server:
            await server.waitFor(rb"left %d unfinished uploads" % len(temporary))
        assert all(p.exists() for p in temporary)
        hourAgo = time.time() - 3700
        for path in temporary:
            os.utime(path, (hourAgo, hourAgo))
        async with tftpServer(reactor, inNs, root, "--writable") as server:
            await server.waitFor(rb"removed %d unfinished uploads" % len(temporary))
            assert not [p for p in root.iterdir() if isTemporaryName(p.name)]
            again = tmp_path / "again"
            again.mkdir()
            for name in cut:
                (again / name).write_bytes((tmp_path / "up" / name).read_bytes())
            summary = await drive(
                reactor,
                inNs,
                "tftpload",
                {**plan, "uploads": str(again)},
                tmp_path / "plan.json",
                120,
            )
        output = server.output
    assert all(t["ok"] for t in summary["transfers"]), summary
    for source in (tmp_path / "up").iterdir():
        assert (root / source.name).read_bytes() == source.read_bytes(), source.name
    assert not tracebacks(output)
    figures.record(
        "tftp-crash",
        uploads=20,
        killedAfter=round(killAt, 2),
        wholeBeforeKill=len(whole),
        cutByKill=len(cut),
        partialUnderFinalName=0,
        reportedAtRestart=len(cut),
        removedAnHourLater=len(cut),
    )
