"""
Where downloads go and what the commands make of the wrong peer (issue #12 items 5-7),
against real servers on 127.0.0.1, with L{cli.main} run on the real reactor.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath

from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.echo.service import EchoService
from twisted_udpsuite.files.service import FileService

pytestmark = pytest.mark.integration


async def runMain(
    reactor: Any, argv: list[str], timeout: float = 10
) -> tuple[int, str, str, bytes]:
    """C{udpsuite ARGV} in this process: (status, stdout text, stderr, stdout bytes)."""
    out, err, binary = io.StringIO(), io.StringIO(), io.BytesIO()
    d = Deferred.fromCoroutine(cli.main(reactor, argv, Console(out, err, binary)))
    status = await d.addTimeout(timeout, reactor)
    return status, out.getvalue(), err.getvalue(), binary.getvalue()


@pytest_twisted.async_yield_fixture()
async def files(reactor: Any, tmp_path: Any) -> Any:
    root = tmp_path / "served"
    root.mkdir()
    data = os.urandom(300_000)
    (root / "data.bin").write_bytes(data)
    service = FileService(FilePath(str(root)), port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    assert service.listening is not None
    yield f"127.0.0.1:{service.listening.getHost().port}", data
    await service.stopService()


@pytest_twisted.async_yield_fixture()
async def echo(reactor: Any) -> Any:
    service = EchoService(port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    assert service.udpPort is not None
    yield f"127.0.0.1:{service.udpPort.getHost().port}"
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_fetchToStandardOutput(
    reactor: Any, files: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    """fetch HOST FILE - writes the file to standard output (verified), and no file '-'."""
    target, data = files
    monkeypatch.chdir(tmp_path)
    status, out, err, written = await runMain(reactor, ["fetch", target, "data.bin", "-"])
    assert (status, out, err) == (0, "", "")
    assert written == data
    assert not os.path.exists(tmp_path / "-")


@pytest_twisted.ensureDeferred
async def test_downloadIntoAMissingDirectory(reactor: Any, files: Any, tmp_path: Any) -> None:
    """
    fetch and tftp get with a LOCAL of newdir/ (missing): a clear one-line error, and no
    file named newdir.
    """
    target, _ = files
    local = str(tmp_path / "newdir") + "/"
    for argv in (["fetch", target, "data.bin", local], ["tftp", "get", target, "f", local]):
        status, _, err, _ = await runMain(reactor, argv)
        assert status == 2, argv
        assert f"LOCAL '{local}': no such directory" in err and err.count("\n") == 1, err
        assert not os.path.exists(tmp_path / "newdir")


@pytest_twisted.ensureDeferred
async def test_fileCommandsAtAnEchoServer(reactor: Any, echo: str, tmp_path: Any) -> None:
    """
    fetch and ls pointed at the echo port (TCP echo sends their request back) fail at once,
    in one line, instead of waiting for the idle timeout.
    """
    local = str(tmp_path / "x")
    for argv in (["fetch", echo, "x", local], ["ls", echo]):
        status, out, err, _ = await runMain(reactor, argv, timeout=5)
        assert (status, out) == (1, ""), argv
        assert "not a udpsuite file server: it answered b'" in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


@pytest_twisted.ensureDeferred
async def test_sendWaitToAClosedPort(reactor: Any) -> None:
    """send --wait to a port nothing listens on: 'connection refused' at once, exit 1."""
    port = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    closed = port.getHost().port
    await port.stopListening()
    argv = ["send", f"127.0.0.1:{closed}", "hello", "--wait", "30"]
    status, out, err, _ = await runMain(reactor, argv, timeout=5)
    assert (status, out) == (1, "")
    assert err == f"udpsuite send: 127.0.0.1:{closed}: connection refused (nothing listening)\n"
