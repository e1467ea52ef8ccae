"""
#16 §2: the file server under 64 resumable downloads at once, SIGKILLed at a seeded moment
and restarted (every download resumes and finishes verified); and clients SIGKILLed
mid-stream (the server frees their connections; its digest cache stays bounded).

CI serves 8 files of 2-5 MiB to 64 downloads; C{UDPSUITE_SOAK=full} 16 files of 16-40 MiB.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.filepath import FilePath

from tests.files.test_integration import fileSha
from tests.process import BackgroundProcess, venvScript
from tests.soak import figures
from tests.soak.harness import sleep, tracebacks
from twisted_udpsuite.files import client
from twisted_udpsuite.files.server import FileServerFactory

pytestmark = [pytest.mark.soak, pytest.mark.integration]

DOWNLOADS = 64
CLIENTS = 8
"""Source addresses (127.0.0.2, ...): the server's per-host limit (16) holds for each."""


class FromAddress:
    """A reactor whose TCP connections leave from one loopback address."""

    def __init__(self, reactor: Any, address: str) -> None:
        self._reactor = reactor
        self._address = address

    def connectTCP(self, host: str, port: int, factory: Any, **kw: Any) -> Any:
        kw["bindAddress"] = (self._address, 0)  # the client's endpoint passes bindAddress=None
        return self._reactor.connectTCP(host, port, factory, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def partSize(local: Path) -> int:
    try:
        return os.path.getsize(f"{local}.part")
    except FileNotFoundError:
        return 0


async def filesServer(reactor: Any, root: Path) -> tuple[BackgroundProcess, int]:
    argv = [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "files", "--port", "0"]
    argv += ["--interface", "127.0.0.1", "--root", str(root)]
    process = BackgroundProcess(reactor, argv)
    match = await process.waitFor(rb"files listening on 127\.0\.0\.1:(\d+)")
    return process, int(match.group(1))


@pytest_twisted.ensureDeferred
async def test_downloadsResumeAfterTheServerIsKilled(reactor: Any, tmp_path: Path) -> None:
    """
    64 downloads at once; twistd is SIGKILLed once a seeded share of all the bytes has
    arrived. Each download that was cut keeps its part; run again against the restarted
    server, every one resumes where its part ends and finishes with the sha256 verified.
    """
    rng = random.Random(1602)
    root = tmp_path / "root"
    root.mkdir()
    count = figures.size(8, 16)
    low, high = figures.size(2, 16) << 20, figures.size(5, 40) << 20
    for n in range(count):
        (root / f"file{n}.bin").write_bytes(rng.randbytes(rng.randrange(low, high)))
    digests = {p.name: fileSha(p) for p in root.iterdir()}
    jobs = [(f"file{n % count}.bin", tmp_path / f"got{n}") for n in range(DOWNLOADS)]
    total = sum((root / name).stat().st_size for name, _ in jobs)
    killShare = rng.uniform(0.2, 0.8)
    held: dict[int, int] = {}
    server, port = await filesServer(reactor, root)
    killed = Deferred()

    def progress(index: int) -> Any:
        def update(have: int, size: int | None) -> None:
            held[index] = have
            if not killed.called and sum(held.values()) >= killShare * total:
                os.kill(server.pid, signal.SIGKILL)
                killed.callback(sum(held.values()))

        return update

    def run(address: int) -> list[Deferred[client.FetchResult]]:
        return [
            client.fetch(
                FromAddress(reactor, f"127.0.0.{2 + n % CLIENTS}"),
                ("127.0.0.1", address),
                name,
                FilePath(str(local)),
                progress=progress(n),
                idleTimeout=30,
            )
            for n, (name, local) in enumerate(jobs)
        ]

    started = reactor.seconds()
    try:
        first = await DeferredList(run(port), consumeErrors=True)
        heldAtKill = await killed
        _, _, code = await server.ended()
        assert code == -9
        output = server.output
        cut = [n for n, (ok, _) in enumerate(first) if not ok]
        for n in cut:
            assert first[n][1].check(client.TransferInterrupted), first[n][1]
        # (A download cut before its answer began has no part: it starts again from 0.)
        parts = {n: partSize(jobs[n][1]) for n in cut}
        server, port = await filesServer(reactor, root)
        jobs = [jobs[n] for n in cut]
        second = await DeferredList(run(port), consumeErrors=True)
    finally:
        await server.stop()
    wall = reactor.seconds() - started
    failed = [value for ok, value in second if not ok]
    assert not failed, failed[:3]
    resumed = 0
    for n, (_, result) in zip(cut, second, strict=True):
        assert result.resumedFrom == parts[n], (n, result, parts[n])
        resumed += result.resumedFrom > 0
    for name, local in [(f"file{n % count}.bin", tmp_path / f"got{n}") for n in range(DOWNLOADS)]:
        assert fileSha(local) == digests[name], local
        assert not os.path.exists(f"{local}.part")
    assert not tracebacks(output + server.output)
    assert resumed > 0
    figures.record(
        "files-resume",
        downloads=DOWNLOADS,
        megabytes=round(total / 2**20),
        killedAtShare=round(heldAtKill / total, 2),
        cutByKill=len(cut),
        resumedFromPart=resumed,
        verified=DOWNLOADS,
        wall=round(wall, 1),
    )


_SLOW_READER = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), source_address=(sys.argv[3], 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.sendall(sys.argv[2].encode())
got = 0
while got < 200_000:
    chunk = s.recv(65536)
    if not chunk:  # the server closed first: nothing left to hold open
        sys.exit("closed after %d bytes" % got)
    got += len(chunk)
print("reading", flush=True)
time.sleep(120)
"""


@pytest_twisted.ensureDeferred
async def test_killedClientsAreFreed(reactor: Any, tmp_path: Path) -> None:
    """
    Clients SIGKILLed in the middle of a body (framed and the real C{udpsuite fetch}): the
    server drops their connections, its descriptors and timers are as before, and its
    digest cache holds no more than its size although more versions were read whole.
    """
    rng = random.Random(1603)
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(32 << 20))
    for n in range(12):
        (root / f"small{n}.bin").write_bytes(rng.randbytes(100_000))
    factory = FileServerFactory(FilePath(str(root)), reactor, digestCache=4)
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = listening.getHost().port
    pid = os.getpid()
    try:
        await fetchAll(reactor, port, tmp_path, ["small0.bin"])  # what a first use sets up
        await idle(reactor, factory)
        before = figures.openFiles(pid)
        readers = [
            BackgroundProcess(
                reactor,
                [sys.executable, "-c", _SLOW_READER, str(port), "FETCH 0 - big.bin\n"]
                + [f"127.0.0.{2 + n % CLIENTS}"],  # the per-host limit is 16
            )
            for n in range(figures.size(6, 32))
        ]
        fetch = BackgroundProcess(
            reactor,
            [venvScript("udpsuite"), "fetch", "-q", f"127.0.0.1:{port}", "big.bin"],
            path=str(tmp_path),
        )
        for reader in readers:
            await reader.waitFor(b"reading")
        part = tmp_path / "big.bin.part"
        for _ in range(400):
            if part.exists() and part.stat().st_size > 0:
                break
            await sleep(reactor, 0.005)
        fetch.signal("STOP")  # mid-stream, whatever its speed
        open = len(factory.protocols)
        for process in [*readers, fetch]:
            process.signal("KILL")
            await process.ended()
        await idle(reactor, factory)
        assert sum(factory.limits.open.values()) == 0
        results = await fetchAll(reactor, port, tmp_path, [f"small{n}.bin" for n in range(12)])
        cached = [r.version for r in results if factory.digestFor(r.version) is not None]
        assert len(cached) <= 4
        await idle(reactor, factory)
        after = figures.openFiles(pid)
        timers = [c for c in reactor.getDelayedCalls() if "files" in repr(c.func)]
    finally:
        await listening.stopListening()
    assert sorted(after.values()) == sorted(before.values()), (before, after)
    assert timers == []
    cut = [e for e in factory.counts.requests if e[1] != "completed"]
    figures.record(
        "files-killed-clients",
        killedMidStream=len(readers) + 1,
        openWhenKilled=open,
        openAfter=len(factory.protocols),
        fdsBefore=len(before),
        fdsAfter=len(after),
        digestsCached=len(cached),
        digestCacheSize=4,
        outcomes=sorted(f"{s} {o}" for s, o in factory.counts.requests),
    )
    assert cut


async def fetchAll(
    reactor: Any, port: int, directory: Path, names: list[str]
) -> list[client.FetchResult]:
    return [
        await client.fetch(
            reactor, ("127.0.0.1", port), name, FilePath(str(directory / f"whole-{name}"))
        ).addTimeout(30, reactor)
        for name in names
    ]


async def idle(reactor: Any, factory: FileServerFactory) -> None:
    """Wait (5 s at most) until the server has no connection left."""
    for _ in range(100):
        if not factory.protocols:
            return
        await sleep(reactor, 0.05)
    raise AssertionError(f"connections left: {factory.protocols}")
