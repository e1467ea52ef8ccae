"""
The suite run as a system service by the real twistd: privileged ports with
C{--uid}/C{--gid}, a daemon with a pid file, and start-up errors as one line.

The root-only tests run inside a network namespace of their own (the
C{loopbackNamespace} fixture), so ports 69 and 7 never meet anything on the host.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests import udpprobe
from tests.conftest import requirePeer
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


async def _download(reactor: Any, prefix: list[str], port: int, local: Path) -> None:
    """Download boot.bin from 127.0.0.1:C{port} with udpsuite tftp get, run after C{prefix}."""
    out, err, code = await runProcess(
        reactor,
        [*prefix, sys.executable, "-m", "twisted_udpsuite", "tftp", "get", f"127.0.0.1:{port}",
         "boot.bin", str(local)],
        timeout=30,
    )  # fmt: skip
    assert code == 0, err


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
        await _download(reactor, loopbackNamespace, 69, local)
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
        await _waitUntil(reactor, lambda: b"offering" in logfile.read_bytes(), "up")
        source, answer = await udpprobe.probe(
            reactor, loopbackNamespace, "127.0.0.1", 7007, "127.0.0.1", b"to the daemon"
        )
        assert answer == b"to the daemon"
    finally:
        os.kill(pid, 15)
    await _waitUntil(reactor, lambda: not Path(f"/proc/{pid}").exists(), "stopped")
    assert not pidfile.exists()
    log = logfile.read_text()
    for port in ("7007 (UDP)", "7007 (TCP)", "8000 (TCP)", "6969 (UDP)", "9999 (UDP)"):
        assert f" listening on 127.0.0.1:{port}" in log
    assert re.search(r"responder '.+' listening on 127\.0\.0\.1:9998 \(UDP\), offering", log)
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


# Sockets handed over: systemd socket activation and inetd


def _activate(namespace: list[str], fdname: str, address: str, *more: str) -> list[str]:
    """C{systemd-socket-activate} listening on C{address}, inside the namespace."""
    activate = requirePeer("systemd-socket-activate")
    return [*namespace, activate, *more, "-l", address, f"--fdname={fdname}"]


@pytest_twisted.ensureDeferred
async def test_socketActivatedEcho(reactor: Any, loopbackNamespace: list[str]) -> None:
    """
    systemd-socket-activate hands echo a TCP and a UDP socket on 0.0.0.0:7, both named
    "echo": twistd (configured for port 7007) adopts them; UDP keeps packet info (asked
    at 127.0.0.2, the answer comes from 127.0.0.2).
    """
    argv = [
        *_activate(loopbackNamespace, "echo", "0.0.0.0:7"),
        *_activate([], "echo", "0.0.0.0:7", "--datagram"),
        venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "echo",
    ]  # fmt: skip
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(rb"Listening on 0\.0\.0\.0:7 as 3")
        tcp = Deferred.fromCoroutine(
            runProcess(reactor, [*loopbackNamespace, sys.executable, "-c", TCP_ECHO,
                                 "127.0.0.1", "7"])
        )  # fmt: skip
        await server.waitFor(rb"Listening on 0\.0\.0\.0:7 as 4")
        # The datagram that wakes the activator up was queued before we asked for packet
        # info (a systemd unit says PassPacketInfo=yes for it); the next ones carry it.
        await udpprobe.probe(reactor, loopbackNamespace, "127.0.0.1", 7, "127.0.0.1", b"wake")
        answer = await udpprobe.probe(
            reactor, loopbackNamespace, "127.0.0.2", 7, "127.0.0.1", b"activated"
        )
        assert answer == (b"127.0.0.2", b"activated"), server.output
        out, err, code = await tcp
        assert (out, code) == (b"over tcp", 0), err
        for transport in (b"TCP", b"UDP"):
            assert b"echo listening on *:7 (" + transport + b", inherited)" in server.output
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_socketActivatedTftpWorkers(
    reactor: Any, loopbackNamespace: list[str], sharedRoot: Path, tmp_path: Path
) -> None:
    """
    A socket on 127.0.0.1:69 named "tftp" serves downloads, shared with --workers
    processes as a bound one is.
    """
    argv = [
        *_activate(loopbackNamespace, "tftp", "127.0.0.1:69", "--datagram"),
        venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp", "--root", str(sharedRoot),
        "--workers", "2",
    ]  # fmt: skip
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(rb"Listening on 127\.0\.0\.1:69 as 3")
        for name in ("first", "second"):
            local = tmp_path / name
            await _download(reactor, loopbackNamespace, 69, local)
            assert local.read_bytes() == (sharedRoot / "boot.bin").read_bytes()
        assert b"tftp listening on 127.0.0.1:69 (UDP, inherited)" in server.output
        assert b"tftp serving in 2 processes" in server.output
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_socketForNoService(reactor: Any, loopbackNamespace: list[str]) -> None:
    """A passed socket no service takes is one line on stderr and exit status 1."""
    argv = [
        *_activate(loopbackNamespace, "tftpd", "127.0.0.1:69", "--datagram"),
        venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp",
    ]  # fmt: skip
    server = BackgroundProcess(reactor, argv)
    await server.waitFor(rb"Listening on 127\.0\.0\.1:69 as 3")
    poke = (
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
        "('127.0.0.1', 69))"
    )
    out, err, code = await runProcess(reactor, [*loopbackNamespace, sys.executable, "-c", poke])
    assert code == 0, err
    out, err, code = await server.ended(timeout=30)
    assert code == 1
    line = (
        b"twistd udpsuite: error: socket 'tftpd' (fd 3, UDP 127.0.0.1:69): "
        b"no service here listens on UDP port 69\n"
    )
    assert err.count(b"twistd udpsuite: error:") == 1 and line in err


class _Ended(ProcessProtocol):
    """Fires C{ended} with the exit status (a process whose descriptors are not pipes)."""

    def __init__(self) -> None:
        self.ended: Deferred[int] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(-1 if code is None else code)


@pytest.mark.parametrize("logged", [True, False])
@pytest_twisted.ensureDeferred
async def test_inetdHandsTheSocketAsStdio(reactor: Any, tmp_path: Path, logged: bool) -> None:
    """
    As inetd does it ("dgram udp wait"): the bound UDP socket is the process's fds 0, 1
    and 2. twistd -n udpsuite tftp --inetd serves a download from it, and exits with
    status 0 once idle for --inetd-timeout seconds; without --logfile (twistd -n logs to
    fd 1, the socket) too.
    """
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.bin").write_bytes(os.urandom(40000))
    log = tmp_path / "tftp.log"
    with _boundUDP() as handed:
        port = handed.getsockname()[1]
        process = _Ended()
        fd = handed.fileno()
        reactor.spawnProcess(
            process,
            venvScript("twistd"),
            [venvScript("twistd"), "-n", "--pidfile=", *([f"--logfile={log}"] if logged else []),
             "udpsuite", "tftp", "--inetd", "--inetd-timeout", "1", "--root", str(root)],
            env=dict(os.environ),
            path=str(tmp_path),
            childFDs={0: fd, 1: fd, 2: fd},
        )  # fmt: skip
    await _download(reactor, [], port, tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == (root / "boot.bin").read_bytes()
    assert await process.ended.addTimeout(30, reactor) == 0
    if not logged:
        return
    text = log.read_text()
    assert f"tftp listening on 127.0.0.1:{port} (UDP, inherited)" in text
    assert "RRQ 'boot.bin'" in text and "exiting (inetd wait mode)" in text


@pytest_twisted.ensureDeferred
async def test_openbsdInetd(
    reactor: Any, loopbackNamespace: list[str], sharedRoot: Path, tmp_path: Path
) -> None:
    """
    Debian's openbsd-inetd with the README's inetd.conf line (a log file instead of
    syslog, to look at): it starts the server for a request, the server exits when idle,
    and inetd starts it again for the next one.
    """
    inetd = requirePeer("inetd")
    log = tmp_path / "tftp.log"
    conf = tmp_path / "inetd.conf"
    conf.write_text(
        f"tftp dgram udp wait root {venvScript('twistd')} twistd -n --pidfile= "
        f"--logfile={log} udpsuite tftp --inetd --inetd-timeout 1 --root {sharedRoot}\n"
    )
    server = BackgroundProcess(reactor, [*loopbackNamespace, inetd, "-d", str(conf)])
    try:
        await server.waitFor(rb"ADD: tftp proto=udp,")
        await _download(reactor, loopbackNamespace, 69, tmp_path / "first")
        await _waitUntil(reactor, lambda: "exiting (inetd wait mode)" in log.read_text(), "idle")
        await _download(reactor, loopbackNamespace, 69, tmp_path / "second")
        await _waitUntil(reactor, lambda: log.read_text().count("exiting") == 2, "idle again")
    finally:
        await server.stop()
    for name in ("first", "second"):
        assert (tmp_path / name).read_bytes() == (sharedRoot / "boot.bin").read_bytes()
    assert log.read_text().count("tftp listening on *:69 (UDP, inherited)") == 2
