"""
C{twistd -n udpsuite tftp --workers N}: how limits split, the worker pool on a fake reactor
(restarts, backoff, stopping, log relay), and real processes on 127.0.0.1 (concurrent curl
downloads spread over processes, a killed worker restarted, no worker outliving its parent).
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure

from tests.conftest import requirePeer
from tests.helpers import assertNoResult, successResultOf
from tests.process import BackgroundProcess, runProcess, venvScript
from twisted_udpsuite import tap
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService
from twisted_udpsuite.tftp.tap import Options, makeService
from twisted_udpsuite.tftp.workerpool import (
    WORKER_MODULE,
    MultiProcessTFTPService,
    WorkerPool,
    processPolicy,
    share,
)
from twisted_udpsuite.tftp.workerprocess import JSONLineObserver, WorkerOptions


def _parse(*argv: str, kind: type[Options] = Options) -> Options:
    options = kind()
    options.parseOptions(list(argv))
    return options


# Options and limits


def test_workersDefaultIsOneProcess(tmp_path: Path) -> None:
    """Without --workers the service is today's single-process L{TFTPService}."""
    options = _parse("--root", str(tmp_path))
    assert options["workers"] == 1
    assert type(makeService(options)) is TFTPService


def test_workersMakesMultiProcessService(tmp_path: Path) -> None:
    options = _parse("--root", str(tmp_path), "--workers", "3", "--max-transfers", "10")
    service = makeService(options)
    assert isinstance(service, MultiProcessTFTPService)
    assert (service.processes, service.pool.count) == (3, 2)
    # The parent (process 0) runs its own share of the totals.
    assert service.server.protocol.policy.maxTransfers == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"],
        ["--workers", "-1"],
        ["--workers", "two"],
        ["--workers", "1.5"],
        ["--workers", "65"],
        ["--workers", "4", "--max-transfers", "3"],
    ],
)
def test_badWorkers(argv: list[str], capsys: Any) -> None:
    with pytest.raises(usage.UsageError):
        _parse(*argv)
    # Through twistd's options: one line on stderr, exit status 2.
    with pytest.raises(SystemExit) as exit:
        tap.Options().parseOptions(["tftp", *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


@pytest.mark.parametrize(("total", "processes"), [(256, 2), (10, 3), (3, 3), (7, 4), (1, 1)])
def test_shareAddsUp(total: int, processes: int) -> None:
    parts = [share(total, processes, i) for i in range(processes)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1 and min(parts) >= 1


def test_processPolicy() -> None:
    """Totals (transfers, request rate and burst) split; the per-client count stays."""
    policy = ServerPolicy(rate=20.0, burst=40.0, maxTransfers=9, maxTransfersPerClient=5)
    assert processPolicy(policy, 1, 0) is policy
    parts = [processPolicy(policy, 2, i) for i in range(2)]
    assert [p.maxTransfers for p in parts] == [5, 4]
    assert {(p.rate, p.burst, p.maxTransfersPerClient) for p in parts} == {(10.0, 20.0, 5)}
    assert processPolicy(ServerPolicy(rate=None), 3, 1).rate is None
    assert processPolicy(ServerPolicy(burst=2.0), 8, 7).burst == 1.0  # a bucket needs 1


def test_toArgvRoundTrip(tmp_path: Path) -> None:
    """Workers get options that parse back to the parent's, so they run the same policy."""
    options = _parse(
        "--root", str(tmp_path), "--writable", "--allow-overwrite", "--no-create",
        "--max-blksize", "1468", "--max-windowsize", "8", "--max-upload-size", "0",
        "--max-transfers", "30", "--max-transfers-per-client", "2", "--rate", "2.5",
        "--retries", "7", "--timeout", "2.5", "--rollover", "1", "--interface", "::",
        "--port", "0", "--workers", "3",
    )  # fmt: skip
    again = _parse(*options.toArgv())
    assert dict(again) == dict(options)
    assert again.policy() == options.policy()
    worker = _parse("--fd", "3", "--index", "2", *options.toArgv(), kind=WorkerOptions)
    assert (worker["fd"], worker["index"], worker["workers"]) == (3, 2, 3)


@pytest.mark.parametrize("index", ["0", "3"])
def test_workerIndexInRange(tmp_path: Path, index: str) -> None:
    with pytest.raises(usage.UsageError):
        _parse("--root", str(tmp_path), "--workers", "3", "--index", index, kind=WorkerOptions)


# The pool on a fake reactor: no processes, no sleeps


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.stdinClosed = False
        self.gone = False

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, name: str) -> None:
        if self.gone:
            raise ProcessExitedAlready()
        self.signals.append(name)


class FakeProcessReactor(Clock):
    """A clock that records spawnProcess calls instead of starting processes."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, list[str], dict[int, Any]]] = []

    def spawnProcess(self, proto: Any, executable: str, args: list[str], **kw: Any) -> Any:
        transport = FakeTransport(1000 + len(self.spawned))
        self.spawned.append((proto, args, kw["childFDs"]))
        proto.makeConnection(transport)
        return transport


def _end(proto: Any, crashed: bool = True) -> None:
    proto.transport.gone = True
    reason = ProcessTerminated(signal=9) if crashed else ProcessDone(0)
    proto.processEnded(Failure(reason))


def _pool(reactor: FakeProcessReactor, count: int = 2, **kw: Any) -> tuple[WorkerPool, list[Any]]:
    events: list[Any] = []
    pool = WorkerPool(
        lambda i: ["python", "-m", WORKER_MODULE, "--index", str(i)],
        count,
        reactor=reactor,
        observer=events.append,
        env={},
        **kw,
    )
    return pool, events


def test_poolStartsWorkersOnTheSocket() -> None:
    reactor = FakeProcessReactor()
    pool, _ = _pool(reactor, 3)
    pool.start(17)
    assert [args[-1] for _, args, _ in reactor.spawned] == ["1", "2", "3"]
    assert {3: 17, 0: "w", 1: "r", 2: "r"} == reactor.spawned[0][2]
    assert sorted(pool.workers) == [1, 2, 3]
    successResultOf(_stopAll(pool, reactor))


def _stopAll(pool: WorkerPool, reactor: FakeProcessReactor) -> Deferred[Any]:
    d = pool.stop()
    for worker in list(pool.workers.values()):
        _end(worker, crashed=False)
    assert reactor.getDelayedCalls() == []
    return d


def test_poolRestartsWithBoundedBackoff() -> None:
    """A worker that keeps dying is restarted after 0.5, 1, 2, ... s, never more than the bound."""
    reactor = FakeProcessReactor()
    pool, _ = _pool(reactor, 1, minBackoff=0.5, maxBackoff=4.0, stableAfter=10.0)
    pool.start(5)
    delays = []
    for _ in range(6):
        _end(pool.workers[1])
        assert 1 not in pool.workers
        (call,) = reactor.getDelayedCalls()
        delays.append(call.getTime() - reactor.seconds())
        spawned = len(reactor.spawned)
        reactor.advance(delays[-1] - 0.01)
        assert len(reactor.spawned) == spawned
        reactor.advance(0.01)
        assert len(reactor.spawned) == spawned + 1 and 1 in pool.workers
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    # A run longer than stableAfter resets the backoff.
    reactor.advance(10)
    _end(pool.workers[1])
    (call,) = reactor.getDelayedCalls()
    assert call.getTime() - reactor.seconds() == 0.5
    successResultOf(pool.stop())
    assert reactor.getDelayedCalls() == []  # the pending restart is cancelled


def _capturePoolLog(monkeypatch: Any) -> list[Any]:
    logged: list[Any] = []
    logger = Logger(namespace=WorkerPool.log.namespace, observer=logged.append)
    monkeypatch.setattr(WorkerPool, "log", logger)
    return logged


def test_poolRestartLogged(monkeypatch: Any) -> None:
    logged = _capturePoolLog(monkeypatch)
    reactor = FakeProcessReactor()
    pool, _ = _pool(reactor, 1)
    pool.start(5)
    _end(pool.workers[1])
    texts = [formatEvent(e) for e in logged]
    assert texts[0] == "tftp worker 1 started (pid 1000)"
    assert texts[1].startswith("tftp worker 1 (pid 1000) ended: ")
    assert texts[1].endswith("restarting in 0.5 s")
    assert logged[1]["log_level"] == LogLevel.warn
    successResultOf(pool.stop())


def test_poolStopTermsThenKills() -> None:
    reactor = FakeProcessReactor()
    pool, _ = _pool(reactor, 2, stopTimeout=5.0)
    pool.start(5)
    first, second = pool.workers[1], pool.workers[2]
    d = pool.stop()
    assert first.transport.stdinClosed and first.transport.signals == ["TERM"]
    _end(first, crashed=False)
    assertNoResult(d)
    reactor.advance(5)
    assert second.transport.signals == ["TERM", "KILL"]
    _end(second)
    successResultOf(d)
    assert pool.workers == {} and reactor.getDelayedCalls() == []
    assert len(reactor.spawned) == 2  # nothing restarted while stopping


def test_poolStopWithoutWorkers() -> None:
    reactor = FakeProcessReactor()
    pool, _ = _pool(reactor, 2)
    successResultOf(pool.stop())


def test_relayedEventsCarryTheWorker() -> None:
    """A worker's JSON events, split anywhere, come out whole, formatted, and marked."""
    reactor = FakeProcessReactor()
    pool, events = _pool(reactor, 1)
    pool.start(5)
    worker = pool.workers[1]
    # The worker's end: its observer writes JSON lines.
    out = io.StringIO()
    Logger(namespace="twisted_udpsuite.tftp.transfer", observer=JSONLineObserver(out)).info(
        "RRQ {file!r} {peer}: ok ({duration:.3f} s)",
        file="f",
        peer=("127.0.0.1", 5),
        duration=0.123456,
        tftpTransfer=True,
    )
    line = out.getvalue().encode()
    assert line.count(b"\n") == 1
    worker.childDataReceived(1, line[:10])
    assert events == []
    worker.childDataReceived(1, line[10:] + line[:5])
    (event,) = events
    assert formatEvent(event) == "worker 1 (pid 1000): RRQ 'f' ('127.0.0.1', 5): ok (0.123 s)"
    assert (event["tftpWorker"], event["tftpWorkerPid"], event["tftpTransfer"]) == (1, 1000, True)
    assert event["log_namespace"] == "twisted_udpsuite.tftp.transfer"
    successResultOf(_stopAll(pool, reactor))


def test_relayedStderrAndGarbage(monkeypatch: Any) -> None:
    logged = _capturePoolLog(monkeypatch)
    reactor = FakeProcessReactor()
    pool, events = _pool(reactor, 1)
    pool.start(5)
    worker = pool.workers[1]
    worker.childDataReceived(2, b"Traceback (most recent call last):\n  boom")
    worker.childDataReceived(1, b"not json\n")
    _end(worker)  # the unfinished stderr line is logged when the worker ends
    texts = [formatEvent(e) for e in logged]
    assert texts[:4] == [
        "tftp worker 1 started (pid 1000)",
        "tftp worker 1 (pid 1000): Traceback (most recent call last):",
        "tftp worker 1 (pid 1000): not json",
        "tftp worker 1 (pid 1000):   boom",
    ]
    assert events == []
    successResultOf(pool.stop())
    assert reactor.getDelayedCalls() == []


# Real processes on 127.0.0.1

LISTENING = rb"tftp listening on \S*:(\d+)"


def twistdTftp(root: Path, *options: str) -> list[str]:
    return [
        venvScript("twistd"),
        "-n",
        "--pidfile=",
        "udpsuite",
        "tftp",
        "--port",
        "0",
        "--root",
        str(root),
        *options,
    ]


class Running:
    """A C{twistd ... --workers N} under test: its port and its workers' pids."""

    def __init__(self, process: BackgroundProcess, port: int, root: Path, data: bytes) -> None:
        self.process = process
        self.port = port
        self.root = root
        self.data = data

    def workerPids(self) -> dict[int, int]:
        """The latest pid of each worker, from the parent's log."""
        pids = {}
        for index, pid in re.findall(rb"tftp worker (\d+) started \(pid (\d+)\)", self.output):
            pids[int(index)] = int(pid)
        return pids

    @property
    def output(self) -> bytes:
        return self.process.output

    def servedBy(self) -> set[int]:
        """The processes (0: the parent) that logged a finished download."""
        found = set()
        for line in self.output.splitlines():
            if b"RRQ 'f'" in line and b": completed (" in line:
                match = re.search(rb"worker (\d+) \(pid \d+\): RRQ", line)
                found.add(int(match.group(1)) if match else 0)
        return found


async def startServer(
    reactor: Any, tmp_path: Path, workers: int, *options: str
) -> tuple[BackgroundProcess, int]:
    process = BackgroundProcess(
        reactor,
        twistdTftp(tmp_path / "root", "--workers", str(workers), *options),
        path=str(tmp_path),
    )
    try:
        match = await process.waitFor(LISTENING)
        for index in range(1, workers):
            await process.waitFor(
                rb"worker %d \(pid \d+\): tftp worker %d serving" % (index, index)
            )
    except Exception:
        await process.stop()
        raise
    return process, int(match.group(1))


@pytest_twisted.async_yield_fixture()
async def running(reactor: Any, tmp_path: Path) -> AsyncIterator[Running]:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(300_000)
    (root / "f").write_bytes(data)
    # No request rate limit: a test may need a few rounds of downloads (limits: unit tests).
    process, port = await startServer(
        reactor, tmp_path, 2, "--interface", "127.0.0.1", "--rate", "0"
    )
    try:
        yield Running(process, port, root, data)
    finally:
        await process.stop()


async def downloads(
    reactor: Any, tmp_path: Path, url: str, data: bytes, count: int, *curlOptions: str
) -> None:
    """C{count} simultaneous curl downloads of C{url}, each byte-identical to C{data}."""
    curl = requirePeer("curl")

    async def one(i: int) -> None:
        target = tmp_path / f"got{i}"
        target.unlink(missing_ok=True)
        argv = [curl, "-sS", *curlOptions, "-o", str(target), url]
        out, err, code = await runProcess(reactor, argv, path=str(tmp_path), timeout=60)
        assert code == 0, err
        assert target.read_bytes() == data

    await gatherResults([Deferred.fromCoroutine(one(i)) for i in range(count)])


def alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie, ended but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def waitUntil(reactor: Any, predicate: Any, timeout: float = 15) -> None:
    """Poll C{predicate} every 50 ms until it holds; fail after C{timeout} seconds."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"still false after {timeout} s: {predicate}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_concurrentDownloadsSpreadOverProcesses(
    reactor: Any, tmp_path: Path, running: Running
) -> None:
    """
    8 simultaneous curl downloads from C{--workers 2} arrive byte-identical, and the
    per-transfer log shows both processes served some (a few rounds at most: which process
    gets a request is the kernel's choice).
    """
    url = f"tftp://127.0.0.1:{running.port}/f"
    for _ in range(5):
        await downloads(reactor, tmp_path, url, running.data, 8, "--tftp-blksize", "1428")
        if running.servedBy() == {0, 1}:
            break
    assert running.servedBy() == {0, 1}, running.output.decode(errors="replace")
    # One event per transfer, relayed with the worker's pid.
    pid = running.workerPids()[1]
    assert re.search(
        rb"worker 1 \(pid %d\): RRQ 'f' \('127\.0\.0\.1', \d+\): completed" % pid, running.output
    )


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_killedWorkerRestarted(reactor: Any, tmp_path: Path, running: Running) -> None:
    """A worker killed by SIGKILL is replaced (with a log line) and the service carries on."""
    old = running.workerPids()[1]
    os.kill(old, signal.SIGKILL)
    await running.process.waitFor(rb"tftp worker 1 \(pid %d\) ended: .*restarting in" % old)
    match = await running.process.waitFor(rb"tftp worker 1 started \(pid (?!%d\))(\d+)\)" % old)
    new = int(match.group(1))
    await running.process.waitFor(rb"worker 1 \(pid %d\): tftp worker 1 serving" % new)
    assert alive(new) and not alive(old)
    url = f"tftp://127.0.0.1:{running.port}/f"
    for _ in range(5):
        await downloads(reactor, tmp_path, url, running.data, 4)
        if re.search(rb"worker 1 \(pid %d\): RRQ 'f'" % new, running.output):
            break
    assert re.search(rb"worker 1 \(pid %d\): RRQ 'f'" % new, running.output)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_stopEndsWorkers(reactor: Any, tmp_path: Path) -> None:
    """SIGTERM to the parent: it stops its workers, then exits; no worker is left."""
    (tmp_path / "root").mkdir()
    process, _ = await startServer(reactor, tmp_path, 3, "--interface", "127.0.0.1")
    pids = Running(process, 0, tmp_path, b"").workerPids()
    assert len(pids) == 2 and all(alive(pid) for pid in pids.values())
    out, err, status = await process.stop()
    assert status == -signal.SIGTERM
    assert b"Server Shut Down." in out + err
    assert b"restarting" not in out + err
    # Each worker stops once, quietly (the closed pipe and TERM arrive together).
    assert b"Traceback" not in out + err and b"#critical]" not in out + err
    assert (out + err).count(b": SIGTERM received, stopping") + (out + err).count(
        b": parent gone, stopping"
    ) == 2
    await waitUntil(reactor, lambda: not any(alive(pid) for pid in pids.values()))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_parentKilledEndsWorkers(reactor: Any, tmp_path: Path) -> None:
    """SIGKILL to the parent: its workers see their pipe close and end by themselves."""
    (tmp_path / "root").mkdir()
    process, _ = await startServer(reactor, tmp_path, 3, "--interface", "127.0.0.1")
    pids = Running(process, 0, tmp_path, b"").workerPids()
    assert len(pids) == 2
    process.signal("KILL")
    _, _, status = await process.stop()
    assert status == -signal.SIGKILL
    await waitUntil(reactor, lambda: not any(alive(pid) for pid in pids.values()))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_dualStackWorkers(reactor: Any, tmp_path: Path) -> None:
    """C{--interface ::}: the workers adopt the IPv6 socket; IPv6 and IPv4 clients served."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 here: {e}")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(100_000)
    (root / "f").write_bytes(data)
    process, port = await startServer(reactor, tmp_path, 2, "--interface", "::", "--rate", "0")
    server = Running(process, port, root, data)
    try:
        for _ in range(5):
            for host in ("[::1]", "127.0.0.1"):
                await downloads(reactor, tmp_path, f"tftp://{host}:{port}/f", data, 4)
            if server.servedBy() == {0, 1}:
                break
        assert server.servedBy() == {0, 1}
        assert b"'::ffff:127.0.0.1'" in server.output and b"'::1'" in server.output
    finally:
        await process.stop()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_portInUse(reactor: Any, tmp_path: Path) -> None:
    """A port in use: the parent fails in one line, exit status 1, before any worker starts."""
    (tmp_path / "root").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        argv = twistdTftp(tmp_path / "root", "--workers", "2", "--interface", "127.0.0.1")
        argv[argv.index("--port") + 1] = str(port)
        out, err, code = await runProcess(reactor, argv, path=str(tmp_path))
    assert code == 1
    assert b"Traceback" not in out + err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use".encode() in out + err
    assert b"tftp worker" not in out + err


class _FakeRequestPort:
    maxThroughput = 256

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", "0.0.0.0", self.number)

    def fileno(self) -> int:
        return 42

    def stopListening(self) -> None:
        self.closed = True


class _BindingProcessReactor(FakeProcessReactor):
    """Also binds UDP ports (fakes), to see when the parent binds."""

    def __init__(self) -> None:
        super().__init__()
        self.bound: list[_FakeRequestPort] = []

    def listenUDP(self, port: int, protocol: Any, **kw: Any) -> _FakeRequestPort:
        self.bound.append(_FakeRequestPort(port))
        return self.bound[-1]


def test_parentBindsWhilePrivilegedAndSpawnsAfter(tmp_path: Path) -> None:
    """
    The --workers parent binds in privilegedStartService (as root under twistd --uid) and
    starts its workers only in startService, after twistd has dropped privileges.
    """
    reactor = _BindingProcessReactor()
    options = _parse("--root", str(tmp_path), "--workers", "2", "--port", "69")
    service = makeService(options, reactor)
    assert isinstance(service, MultiProcessTFTPService)
    service.privilegedStartService()
    assert [p.number for p in reactor.bound] == [69] and service.bound
    assert reactor.spawned == []
    service.startService()
    assert len(reactor.bound) == 1 and reactor.bound[0].maxThroughput == 1
    assert [childFDs[3] for _, _, childFDs in reactor.spawned] == [42]
    stopped = service.stopService()
    for worker in list(service.pool.workers.values()):
        _end(worker, crashed=False)
    successResultOf(stopped)
    assert reactor.bound[0].closed and reactor.getDelayedCalls() == []
