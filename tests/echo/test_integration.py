"""
Echo on real sockets on 127.0.0.1: our service with our client, outside peers
(socat, nc), and the installed twistd plugin and udpsuite script as processes.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from twisted_udpsuite.echo.client import ping
from twisted_udpsuite.echo.service import EchoService

pytestmark = pytest.mark.integration


@pytest_twisted.async_yield_fixture()
async def echoService(reactor: Any) -> Any:
    service = EchoService(port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    yield service
    await service.stopService()


def portOf(service: EchoService) -> int:
    assert service.udpPort is not None
    return service.udpPort.getHost().port  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_udpPing(reactor: Any, echoService: EchoService) -> None:
    """Our client pings our server over real UDP: every probe answered, counted per peer."""
    result = await ping(
        reactor, ("127.0.0.1", portOf(echoService)), count=5, interval=0.01, size=1400
    ).addTimeout(10, reactor)
    assert result.received == 5 and result.loss == 0
    assert echoService.stats.echoed == 5
    assert echoService.stats.peers["127.0.0.1"].bytes == 5 * 1400


@pytest_twisted.ensureDeferred
async def test_pingWithoutReactor(reactor: Any, echoService: EchoService) -> None:
    """ping(None, ...) uses the global reactor."""
    result = await ping(None, ("127.0.0.1", portOf(echoService)), count=1).addTimeout(10, reactor)
    assert result.received == 1


@pytest_twisted.ensureDeferred
async def test_largestDatagram(reactor: Any, echoService: EchoService) -> None:
    """A 65507-byte datagram comes back whole (no 8 KiB recvfrom truncation)."""
    result = await ping(
        reactor, ("127.0.0.1", portOf(echoService)), count=1, size=65507
    ).addTimeout(10, reactor)
    assert [r.size for r in result.replies] == [65507]


class _Gather(Protocol):
    def __init__(self, expected: int) -> None:
        from twisted.internet.defer import Deferred

        self.expected = expected
        self.data = bytearray()
        self.complete: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.complete.called:
            self.complete.callback(bytes(self.data))


@pytest_twisted.ensureDeferred
async def test_tcpEchoOnTheSamePort(reactor: Any, echoService: EchoService) -> None:
    """TCP echo listens on the UDP port's number and returns a 4 MiB stream intact."""
    payload = os.urandom(4 * 1024 * 1024)
    proto = _Gather(len(payload))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", portOf(echoService))
    await connectProtocol(endpoint, proto).addTimeout(10, reactor)
    proto.transport.write(payload)
    assert await proto.complete.addTimeout(30, reactor) == payload
    proto.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_socatUdpAndTcp(reactor: Any, echoService: EchoService) -> None:
    """socat, an outside peer, gets its UDP datagram and its TCP bytes echoed."""
    socat = requirePeer("socat")
    port = portOf(echoService)
    for address in (f"UDP:127.0.0.1:{port}", f"TCP:127.0.0.1:{port}"):
        out, err, code = await runProcess(
            reactor, [socat, "-t", "2", "-T", "5", "-", address], stdin=b"hello from socat\n"
        )
        assert (out, code) == (b"hello from socat\n", 0), err


@pytest_twisted.ensureDeferred
async def test_netcatUdp(reactor: Any, echoService: EchoService) -> None:
    """OpenBSD netcat in UDP mode gets its line echoed."""
    nc = requirePeer("nc")
    out, err, code = await runProcess(
        reactor, [nc, "-u", "-w", "2", "127.0.0.1", str(portOf(echoService))], stdin=b"nc says hi\n"
    )
    assert out == b"nc says hi\n", err


def twistdEcho(port: str) -> list[str]:
    """The command line of a foreground twistd echo service on 127.0.0.1."""
    return [
        venvScript("twistd"),
        "-n",
        "--pidfile=",
        "udpsuite",
        "echo",
        "--port",
        port,
        "--interface",
        "127.0.0.1",
    ]


@pytest_twisted.ensureDeferred
async def test_twistdPluginAndConsoleScript(reactor: Any) -> None:
    """
    The installed twistd lists the plugin and runs the echo service; the
    installed udpsuite script pings it.  Run from an empty directory, so only
    the installed package is used; run twice, so a written dropin.cache is
    read back without complaint.
    """
    with tempfile.TemporaryDirectory() as cwd:
        env = {"PYTHONPATH": ""}
        for _ in range(2):
            out, err, code = await runProcess(
                reactor, [venvScript("twistd"), "--help"], env=env, path=cwd
            )
            assert code == 0 and b"udpsuite" in out
            assert b"Traceback" not in err and b"Unable to write" not in out + err
        server = BackgroundProcess(
            reactor,
            twistdEcho("0"),
            env=env,
            path=cwd,
        )
        try:
            match = await server.waitFor(rb"echo listening on 127\.0\.0\.1:(\d+)")
            port = match.group(1).decode()
            out, err, code = await runProcess(
                reactor,
                [venvScript("udpsuite"), "echo", f"127.0.0.1:{port}", "-c", "2", "-i", "0.05"],
                env=env,
                path=cwd,
            )
            assert code == 0, err
            assert b"2 probes sent, 2 received, 0.0% loss" in out
            # The same port number is taken: a second twistd fails in one line.
            out, err, code = await runProcess(
                reactor,
                twistdEcho(port),
                env=env,
                path=cwd,
            )
            assert code == 1
            assert b"Traceback" not in out + err
            assert f"cannot listen on 127.0.0.1:{port}: Address already in use".encode() in out
        finally:
            _, _, status = await server.stop()
        assert b"echoed datagram #2 from 127.0.0.1" in server.output
        # twistd shuts down cleanly on SIGTERM, then re-raises it so that its
        # exit status says it was terminated.
        assert b"Server Shut Down." in server.output
        assert status == -15


@pytest_twisted.ensureDeferred
async def test_pythonDashM(reactor: Any) -> None:
    """python -m twisted_udpsuite is the same program as udpsuite."""
    import sys

    out, err, code = await runProcess(reactor, [sys.executable, "-m", "twisted_udpsuite", "--help"])
    assert code == 0 and b"echo" in out
    out, err, code = await runProcess(reactor, [sys.executable, "-m", "twisted_udpsuite", "echo"])
    assert code == 2 and err.count(b"\n") == 1
