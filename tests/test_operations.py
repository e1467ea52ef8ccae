"""
Running in production (issue #11 §3-§5) with the real twistd on 127.0.0.1: metrics scraped
with a real HTTP client after real transfers (also with TFTP worker processes), a stop that
lets transfers finish and cuts the rest (real curl clients), and JSON logs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import eventFromJSON, formatEvent
from twisted.web.client import Agent, readBody

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.test_workerpool import waitUntil

TFTP_LISTENING = rb"tftp listening on \S*:(\d+)"
METRICS_LISTENING = rb"metrics listening on 127\.0\.0\.1:(\d+) \(TCP\)"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def twistd(*argv: str, before: tuple[str, ...] = ()) -> list[str]:
    return [venvScript("twistd"), "-n", "--pidfile=", *before, "udpsuite", *argv]


def tftp(root: Path, *options: str) -> list[str]:
    """The tftp subcommand on a free port of 127.0.0.1, serving C{root}."""
    return ["tftp", "--port", "0", "--interface", "127.0.0.1", "--root", str(root), *options]


async def scrape(reactor: Any, port: int) -> Samples:
    """GET /metrics with a real HTTP client; parsed by prometheus_client's parser."""
    agent = Agent(reactor)
    response = await agent.request(b"GET", b"http://127.0.0.1:%d/metrics" % port).addTimeout(
        10, reactor
    )
    assert response.code == 200
    body = (await readBody(response).addTimeout(10, reactor)).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def start(reactor: Any, cwd: Path, argv: list[str], *patterns: bytes) -> Any:
    """Start C{argv}; wait for each pattern; return the process and the first groups."""
    process = BackgroundProcess(reactor, argv, path=str(cwd))
    try:
        found = [int((await process.waitFor(p)).group(1)) for p in patterns]
    except Exception:
        await process.stop()
        raise
    return process, *found


async def curl(reactor: Any, cwd: Path, *argv: str, timeout: float = 60) -> tuple[bytes, int]:
    out, err, code = await runProcess(
        reactor, [requirePeer("curl"), "-sS", *argv], path=str(cwd), timeout=timeout
    )
    return err, code


def completed(samples: Samples, outcome: str = "completed", direction: str = "download") -> float:
    key = ("udpsuite_tftp_transfers_total", (("direction", direction), ("outcome", outcome)))
    return samples.get(key, 0)


def served(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    """A served root (tmp_path/root) holding one file of C{size} random bytes."""
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return root, data


# Metrics


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_metricsAfterRealTransfers(reactor: Any, tmp_path: Path) -> None:
    """
    curl downloads (two good, one missing file) and an upload, then a scrape: the counts,
    bytes and gauge say exactly that; the metrics port is on loopback only by default.
    """
    root, data = served(tmp_path, "f", 100_000)
    (tmp_path / "up").write_bytes(b"u" * 3000)
    process, port, metricsPort = await start(
        reactor,
        tmp_path,
        twistd("--metrics-port", "0", *tftp(root, "--writable", "--rate", "0")),
        TFTP_LISTENING,
        METRICS_LISTENING,
    )
    try:
        for name in ("a", "b"):
            err, code = await curl(reactor, tmp_path, "-o", name, f"tftp://127.0.0.1:{port}/f")
            assert code == 0, err
        err, code = await curl(reactor, tmp_path, "-o", "c", f"tftp://127.0.0.1:{port}/missing")
        assert code != 0
        err, code = await curl(reactor, tmp_path, "-T", "up", f"tftp://127.0.0.1:{port}/up")
        assert code == 0, err
        samples = await scrape(reactor, metricsPort)
        listening = [c for c in psConnections(process) if c.endswith(f":{metricsPort}")]
    finally:
        await process.stop()
    assert listening == [f"127.0.0.1:{metricsPort}"]
    assert completed(samples) == 2
    assert completed(samples, "failed") == 1
    assert completed(samples, direction="upload") == 1
    assert samples[("udpsuite_tftp_sent_bytes_total", ())] == 2 * len(data)
    assert samples[("udpsuite_tftp_received_bytes_total", ())] == 3000
    assert samples[("udpsuite_tftp_active_transfers", ())] == 0
    download = (("direction", "download"),)
    assert samples[("udpsuite_tftp_transfer_duration_seconds_count", download)] == 3


def psConnections(process: BackgroundProcess) -> list[str]:
    """The TCP addresses the process listens on (from /proc/PID/net/tcp and its fds)."""
    pid = process._proto.transport.pid
    if pid is None:
        return []
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            host, port = fields[1].split(":")
            address = socket.inet_ntoa(bytes.fromhex(host)[::-1])
            found.append(f"{address}:{int(port, 16)}")
    return found


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_metricsEcho(reactor: Any, tmp_path: Path) -> None:
    """UDP datagrams to the real echo service show in the scrape (echoed and refused)."""
    process, port, metricsPort = await start(
        reactor,
        tmp_path,
        twistd("--metrics-port", "0", "echo", "--port", "0", "--interface", "127.0.0.1"),
        rb"echo listening on \S*:(\d+)",
        METRICS_LISTENING,
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            for _ in range(5):
                s.sendto(b"12345678", ("127.0.0.1", port))
                assert s.recvfrom(100)[0] == b"12345678"
        samples = await scrape(reactor, metricsPort)
    finally:
        await process.stop()
    assert samples[("udpsuite_echo_datagrams_total", ())] == 5
    assert samples[("udpsuite_echo_bytes_total", ())] == 40


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_metricsWithWorkers(reactor: Any, tmp_path: Path) -> None:
    """
    With C{--workers 2} the parent's scrape counts every process's transfers: 12
    simultaneous downloads (the kernel spreads them over both processes, as each
    transfer's log line shows) are 12 completed downloads in the one scrape.
    """
    root, data = served(tmp_path, "f", 200_000)
    process, port, metricsPort, _ = await start(
        reactor,
        tmp_path,
        twistd("--metrics-port", "0", *tftp(root, "--rate", "0", "--workers", "2")),
        TFTP_LISTENING,
        METRICS_LISTENING,
        rb"worker 1 \(pid (\d+)\): tftp worker 1 serving",
    )
    try:
        total = 0
        for _ in range(4):
            await gatherResults(
                [
                    Deferred.fromCoroutine(
                        curl(reactor, tmp_path, "-o", f"got{i}", f"tftp://127.0.0.1:{port}/f")
                    )
                    for i in range(12)
                ]
            )
            total += 12
            if re.search(rb"worker 1 \(pid \d+\): RRQ 'f'", process.output) and re.search(
                rb"\] RRQ 'f'", process.output
            ):
                break
        samples = await scrape(reactor, metricsPort)
    finally:
        await process.stop()
    assert re.search(rb"worker 1 \(pid \d+\): RRQ 'f'", process.output), "no worker served"
    assert completed(samples) == total
    assert samples[("udpsuite_tftp_sent_bytes_total", ())] == total * len(data)
    assert samples[("udpsuite_tftp_active_transfers", ())] == 0


# Drain


class Curl:
    """A curl download in the background, which the test can pause (SIGSTOP) and resume."""

    def __init__(self, reactor: Any, cwd: Path, target: Path, *argv: str) -> None:
        self.target = target
        self.process = BackgroundProcess(
            reactor, [requirePeer("curl"), "-sS", "-o", str(target), *argv], path=str(cwd)
        )

    def started(self) -> bool:
        return self.target.exists() and self.target.stat().st_size > 0

    def signal(self, name: str) -> None:
        """Send SIGNAME (STOP, CONT...), unless it has ended."""
        try:
            self.process._proto.transport.signalProcess(getattr(signal, "SIG" + name))
        except ProcessExitedAlready:
            pass


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_drainTftp(reactor: Any, tmp_path: Path) -> None:
    """
    SIGTERM with two curl downloads running (both paused mid-way with SIGSTOP): the one
    resumed during the drain completes byte-identical; a new request meanwhile is
    refused; the one still paused when the drain time (5 s) is over is cut, logged
    C{cut}; the server then exits, well before the client would have given up.
    """
    root, data = served(tmp_path, "big", 10_000_000)
    process, port = await start(
        reactor,
        tmp_path,
        twistd("--drain", "5", *tftp(root, "--rate", "0")),
        TFTP_LISTENING,
    )
    url = f"tftp://127.0.0.1:{port}/big"
    finishing = Curl(reactor, tmp_path, tmp_path / "finishing", "--tftp-blksize", "512", url)
    cut = Curl(reactor, tmp_path, tmp_path / "cut", "--tftp-blksize", "512", url)
    try:
        for download in (finishing, cut):
            await waitUntil(reactor, download.started)
            download.signal("STOP")
        stopping = reactor.seconds()
        process.signal("TERM")
        await process.waitFor(rb"running transfers get up to 5")
        err, code = await curl(reactor, tmp_path, "-o", "late", url, timeout=20)
        assert code != 0, err  # curl reads the ERROR from the request port as error 71
        finishing.signal("CONT")
        out, err, code = await finishing.process.ended(timeout=30)
        assert code == 0, (err, process.output.decode(errors="replace"))
        assert (tmp_path / "finishing").read_bytes() == data
        out, err, status = await process.ended(timeout=15)
        took = reactor.seconds() - stopping
    finally:
        cut.signal("CONT")
        await process.stop()
        await cut.process.stop()
    log = process.output.decode(errors="replace")
    assert status in (0, -signal.SIGTERM), log  # twistd ends by the signal it was sent
    assert 5 <= took < 15, log
    assert len(re.findall(r"RRQ 'big' .*: (?:ok|completed) ", log)) == 1, log
    assert len(re.findall(r"RRQ 'big' .*: cut ", log)) == 1, log
    assert re.search(r"refusing \('127\.0\.0\.1', \d+\): the server is stopping", log), log


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_drainTftpWorkers(reactor: Any, tmp_path: Path) -> None:
    """
    With C{--workers 2} every process drains: six paused downloads (the kernel spreads
    them over the processes), three resumed during the drain complete, the three left
    paused are cut and logged so, whichever process ran them; the workers end too.
    """
    root, data = served(tmp_path, "big", 10_000_000)
    process, port, workerPid = await start(
        reactor,
        tmp_path,
        twistd("--drain", "4", *tftp(root, "--rate", "0", "--workers", "2")),
        TFTP_LISTENING,
        rb"tftp worker 1 started \(pid (\d+)\)",
    )
    await process.waitFor(rb"worker 1 \(pid \d+\): tftp worker 1 serving")
    url = f"tftp://127.0.0.1:{port}/big"
    downloads = [
        Curl(reactor, tmp_path, tmp_path / f"got{i}", "--tftp-blksize", "512", url)
        for i in range(6)
    ]
    try:
        for download in downloads:
            await waitUntil(reactor, download.started)
            download.signal("STOP")
        process.signal("TERM")
        await process.waitFor(rb"running transfers get up to 4")
        for download in downloads[:3]:
            download.signal("CONT")
        for download in downloads[:3]:
            out, err, code = await download.process.ended(timeout=30)
            assert code == 0, err
            assert download.target.read_bytes() == data
        out, err, status = await process.ended(timeout=20)
    finally:
        for download in downloads:
            download.signal("CONT")
        await process.stop()
        for download in downloads:
            await download.process.stop()
    log = process.output.decode(errors="replace")
    assert len(re.findall(r"RRQ 'big' .*: (?:ok|completed) ", log)) == 3, log
    assert len(re.findall(r"RRQ 'big' .*: cut ", log)) == 3, log
    assert not re.search(r"RRQ 'big' .*: (?:aborted|failed)", log), log
    assert not Path(f"/proc/{workerPid}").exists() or "Z" in _state(workerPid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_drainHttp(reactor: Any, tmp_path: Path) -> None:
    """
    The file service's HTTP side under SIGTERM: a slow curl download that needs less
    than the drain time completes, one that needs far more is cut (curl reports a short
    transfer), and the server exits after the drain time.
    """
    root, small = served(tmp_path, "small", 300_000)
    (root / "big").write_bytes(os.urandom(40_000_000))
    process, port = await start(
        reactor,
        tmp_path,
        twistd(
            "--drain", "3",
            "files", "--port", "0", "--http-port", "0", "--interface", "127.0.0.1",
            "--root", str(root),
        ),
        rb"files-http listening on \S*:(\d+)",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    finishing = Curl(reactor, tmp_path, tmp_path / "small", "--limit-rate", "200K", base + "/small")
    cut = Curl(reactor, tmp_path, tmp_path / "big", "--limit-rate", "1M", base + "/big")
    try:
        for download in (finishing, cut):
            await waitUntil(reactor, download.started)
        stopping = reactor.seconds()
        process.signal("TERM")
        out, err, code = await finishing.process.ended(timeout=20)
        assert code == 0, err
        assert (tmp_path / "small").read_bytes() == small
        out, err, code = await cut.process.ended(timeout=20)
        assert code != 0  # curl: transfer closed with bytes remaining
        out, err, status = await process.ended(timeout=20)
        took = reactor.seconds() - stopping
    finally:
        await process.stop()
        await cut.process.stop()
    log = process.output.decode(errors="replace")
    assert status in (0, -signal.SIGTERM), log  # twistd ends by the signal it was sent
    assert 3 <= took < 12, log
    assert re.search(r"GET '/small' from 127\.0\.0\.1: 200 ok, 300000 bytes", log), log
    assert re.search(r"GET '/big' from 127\.0\.0\.1: 200 cut, \d+ bytes", log), log


# JSON logs


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_jsonLogger(reactor: Any, tmp_path: Path) -> None:
    """
    C{twistd --logger twisted_udpsuite.logs.jsonLogger}: every line of the log is a JSON
    object (nothing on stdout), and a TFTP download gives one record with the stable
    fields (service, peer, file, bytes, duration, outcome).
    """
    root, data = served(tmp_path, "f", 5000)
    logfile = tmp_path / "log.json"
    argv = twistd(
        *tftp(root),
        before=("--logger", "twisted_udpsuite.logs.jsonLogger", "--logfile", str(logfile)),
    )
    process = BackgroundProcess(reactor, argv, path=str(tmp_path))
    try:
        await waitUntil(reactor, lambda: b"tftp listening" in _read(logfile))
        [listening] = [r for r in records(logfile) if "tftp listening" in r.get("text", "")]
        port = listening["port"]
        err, code = await curl(reactor, tmp_path, "-o", "got", f"tftp://127.0.0.1:{port}/f")
        assert code == 0, err
        await waitUntil(reactor, lambda: b"tftpTransfer" in _read(logfile))
    finally:
        out, err, status = await process.stop()
    logged = records(logfile)
    assert logged and out == b""
    [transfer] = [r for r in logged if r.get("tftpTransfer")]
    assert transfer["service"] == "tftp"
    assert transfer["file"] == "f"
    assert transfer["bytes"] == len(data)
    assert transfer["outcome"] in ("ok", "completed")
    assert transfer["peer"][0] == "127.0.0.1"
    assert transfer["duration"] >= 0
    assert transfer["text"].startswith("RRQ 'f' ('127.0.0.1', ")
    assert formatEvent(eventFromJSON(json.dumps(transfer))).startswith("RRQ 'f'")
    # The start signal (no text) is not a record of its own.
    assert not [r for r in logged if r.get("tftpTransferStarted")]


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in _read(path).decode().splitlines()]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
