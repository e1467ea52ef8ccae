"""
The suite run as a system service by the real twistd: privileged ports with
C{--uid}/C{--gid}, a daemon with a pid file, and start-up errors as one line.

The root-only tests run inside a network namespace of their own (the
C{loopbackNamespace} fixture), so ports 69 and 7 never meet anything on the host.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from tests import udpprobe
from tests.process import BackgroundProcess, runProcess, venvScript

pytestmark = pytest.mark.integration

UNPRIVILEGED = "nobody"

TCP_ECHO = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"over tcp")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while len(got) < 8:
        data = s.recv(100)
        if not data:
            break
        got += data
sys.stdout.write(got.decode())
"""


@pytest.fixture
def sharedRoot() -> Iterator[Path]:
    """
    A served directory an unprivileged user can read (pytest's own temporary
    directories are private to root), with one file in it.
    """
    root = Path(tempfile.mkdtemp(prefix="udpsuite-served-"))
    try:
        root.chmod(0o755)
        served = root / "boot.bin"
        served.write_bytes(os.urandom(3000) * 5)
        served.chmod(0o644)
        yield root
    finally:
        shutil.rmtree(root)


def _requireRoot() -> None:
    if os.geteuid() != 0:
        pytest.skip("binding port 69 and switching users need root")


def _ids(pid: int) -> tuple[int, int]:
    """The real user and group ids of process C{pid}, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def _twistdAsNobody(namespace: list[str], *service: str) -> list[str]:
    return [*namespace, venvScript("twistd"), "-n", "--pidfile=", "--uid", UNPRIVILEGED,
            "--gid", "nogroup", "udpsuite", *service, "--interface", "127.0.0.1"]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_privilegedPortsServedUnprivileged(
    reactor: Any, loopbackNamespace: list[str], sharedRoot: Path, tmp_path: Path
) -> None:
    """
    twistd --uid/--gid binds TFTP port 69 and echo port 7 (UDP and TCP) as root, then
    serves a download and echoes both ways as the unprivileged user (its ids in /proc).
    """
    _requireRoot()
    user = pwd.getpwnam(UNPRIVILEGED)
    tftp = BackgroundProcess(
        reactor, _twistdAsNobody(loopbackNamespace, "tftp", "--port", "69", "--root",
                                 str(sharedRoot)),
    )  # fmt: skip
    echo = BackgroundProcess(reactor, _twistdAsNobody(loopbackNamespace, "echo", "--port", "7"))
    try:
        await tftp.waitFor(rb"tftp listening on 127\.0\.0\.1:69 \(UDP\)")
        await echo.waitFor(rb"echo listening on 127\.0\.0\.1:7 \(TCP\)")
        for process in (tftp, echo):
            await process.waitFor(rb"set uid/gid")
        for process in (tftp, echo):
            assert _ids(process.pid) == (user.pw_uid, user.pw_gid)

        local = tmp_path / "boot.bin"
        out, err, code = await runProcess(
            reactor,
            [*loopbackNamespace, sys.executable, "-m", "twisted_udpsuite", "tftp", "get",
             "127.0.0.1:69", "boot.bin", str(local)],
            timeout=30,
        )  # fmt: skip
        assert code == 0, err
        assert local.read_bytes() == (sharedRoot / "boot.bin").read_bytes()

        source, answer = await udpprobe.probe(
            reactor, loopbackNamespace, "127.0.0.1", 7, "127.0.0.1", b"over udp"
        )
        assert (source, answer) == (b"127.0.0.1", b"over udp")
        out, err, code = await runProcess(
            reactor, [*loopbackNamespace, sys.executable, "-c", TCP_ECHO, "127.0.0.1", "7"]
        )
        assert (out, code) == (b"over tcp", 0), err
    finally:
        for process in (tftp, echo):
            await process.stop()
    assert b"RRQ 'boot.bin'" in tftp.output


async def _waitUntil(reactor: Any, check: Any, what: str, bound: float = 20) -> None:
    """Poll C{check()} every 0.1 s until it is true; fail after C{bound} seconds."""
    for _ in range(int(bound / 0.1)):
        if check():
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"not {what} after {bound} s")


@pytest_twisted.ensureDeferred
async def test_daemon(reactor: Any, loopbackNamespace: list[str], tmp_path: Path) -> None:
    """
    twistd --pidfile P --logfile L udpsuite (every service, as a daemon) starts, answers,
    and stops on SIGTERM, removing its pid file.
    """
    pidfile, logfile = tmp_path / "udpsuite.pid", tmp_path / "udpsuite.log"
    out, err, code = await runProcess(
        reactor,
        [*loopbackNamespace, venvScript("twistd"), f"--pidfile={pidfile}",
         f"--logfile={logfile}", "udpsuite", "--interface", "127.0.0.1"],
        path=str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    await _waitUntil(reactor, pidfile.exists, "started")
    pid = int(pidfile.read_text())
    try:
        await _waitUntil(reactor, lambda: b"responder listening" in logfile.read_bytes(), "up")
        source, answer = await udpprobe.probe(
            reactor, loopbackNamespace, "127.0.0.1", 7007, "127.0.0.1", b"to the daemon"
        )
        assert answer == b"to the daemon"
    finally:
        os.kill(pid, 15)
    await _waitUntil(reactor, lambda: not Path(f"/proc/{pid}").exists(), "stopped")
    assert not pidfile.exists()
    log = logfile.read_text()
    for name in ("echo", "files", "tftp", "chatroom", "responder"):
        assert f"{name} listening on 127.0.0.1:" in log
    assert "Server Shut Down." in log


def _boundUDP() -> socket.socket:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    return taken


@pytest_twisted.ensureDeferred
async def test_portInUseUnderTwistd(reactor: Any, tmp_path: Path) -> None:
    """
    Under the real twistd (which binds in privilegedStartService) a port in use is one
    line on stderr and status 1; the pid file is gone.
    """
    pidfile = tmp_path / "twistd.pid"
    with _boundUDP() as taken:
        port = taken.getsockname()[1]
        out, err, code = await runProcess(
            reactor,
            [venvScript("twistd"), "-n", f"--pidfile={pidfile}", "udpsuite", "echo", "--port",
             str(port), "--interface", "127.0.0.1"],
            path=str(tmp_path),
        )  # fmt: skip
    assert code == 1
    assert (
        err
        == (
            f"twistd udpsuite: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        ).encode()
    )
    assert not pidfile.exists()


@pytest_twisted.ensureDeferred
async def test_daemonPortInUse(reactor: Any, tmp_path: Path) -> None:
    """
    As a daemon, a port in use ends the launching process with status 1 and the reason
    on its stderr (twistd's two lines), instead of leaving it waiting; no pid file stays.
    """
    pidfile = tmp_path / "twistd.pid"
    with _boundUDP() as taken:
        port = taken.getsockname()[1]
        out, err, code = await runProcess(
            reactor,
            [venvScript("twistd"), f"--pidfile={pidfile}", f"--logfile={tmp_path / 'log'}",
             "udpsuite", "echo", "--port", str(port), "--interface", "127.0.0.1"],
            path=str(tmp_path),
            timeout=30,
        )  # fmt: skip
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use".encode() in err
    assert not pidfile.exists()
