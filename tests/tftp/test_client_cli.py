"""Tests for C{udpsuite tftp get/put}, on the in-memory network against the fake server."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from tests.tftp.fakeserver import FakeServer, Script
from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.testing import MemoryNetwork


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def runCommand(
    argv: list[str],
    files: dict[bytes, bytes] | None = None,
    script: Script | None = None,
    terminal: bool = False,
    port: int = 6969,
) -> tuple[int, str, str, FakeServer]:
    net = MemoryNetwork(seed=3)
    serverHost = net.addHost("192.0.2.1/24", "2001:db8::1/64")
    client = net.addHost("192.0.2.2/24", "2001:db8::2/64")
    server = FakeServer(serverHost, files or {}, script)
    serverHost.listenUDP(port, server, interface="::", maxPacketSize=65536)
    out = _Terminal() if terminal else io.StringIO()
    err = _Terminal() if terminal else io.StringIO()
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    net.advance(60)
    assert net.clock.getDelayedCalls() == []
    return status, out.getvalue(), err.getvalue(), server


def test_getMissingFileIsOneLine(tmp_path: Any) -> None:
    """A server error is one line naming the file, the server and its message; exit 1."""
    local = str(tmp_path / "x")
    status, out, err, _ = runCommand(["tftp", "get", "192.0.2.1", "nothere", local])
    assert status == 1 and out == ""
    assert err == "udpsuite tftp: get nothere (192.0.2.1:6969): file not found\n"
    assert os.listdir(tmp_path) == []


def test_putRefused(tmp_path: Any) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"abc")
    status, _, err, server = runCommand(
        ["tftp", "put", "[2001:db8::1]:6969", str(source)],
        script=Script(requestError=(2, "Access violation")),
    )
    assert status == 1
    assert err == ("udpsuite tftp: put up.bin ([2001:db8::1]:6969): access violation\n")
    assert server.requests[0].filename == b"up.bin"
    assert server.requests[0].options == {"tsize": "3"}


def test_silentServer(tmp_path: Any) -> None:
    status, _, err, server = runCommand(
        ["tftp", "get", "192.0.2.1", "f", str(tmp_path / "f"), "--retries", "1", "-t", "1"],
        script=Script(silent=True),
    )
    assert status == 1 and "timed out" in err
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tftp"], "tftp: say get or put"),
        (["tftp", "get", "192.0.2.1"], "tftp get: missing HOST[:PORT] REMOTE"),
        (["tftp", "put", "192.0.2.1"], "tftp put: missing HOST[:PORT] LOCAL"),
        (["tftp", "get", "192.0.2.1", "f", "--blksize", "7"], "--blksize: must be from 8"),
        (["tftp", "get", "192.0.2.1", "f", "--mode", "mail"], "--mode: 'mail' is not"),
        (["tftp", "get", "192.0.2.1:99999", "f"], "port must be a number"),
        (["tftp", "get", "192.0.2.1", "dir/"], "cannot name a local file"),
        (["tftp", "put", "192.0.2.1", "-"], "put from standard input needs REMOTE"),
    ],
)
def test_usageErrors(argv: list[str], message: str) -> None:
    status, out, err, _ = runCommand(argv)
    assert status == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_putMissingLocalFile(tmp_path: Any) -> None:
    status, _, err, server = runCommand(["tftp", "put", "192.0.2.1", str(tmp_path / "none")])
    assert status == 1 and "not a readable file" in err
    assert server.requests == []


def test_getToDefaultLocalName(tmp_path: Any, monkeypatch: Any) -> None:
    """LOCAL defaults to REMOTE's last segment; quiet when stdout is not a terminal."""
    monkeypatch.chdir(tmp_path)
    data = os.urandom(3000)
    status, out, err, server = runCommand(
        ["tftp", "get", "192.0.2.1", "dir/f.bin", "--blksize", "1024"], {b"dir/f.bin": data}
    )
    assert (status, out, err) == (0, "", "")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests[0].options == {"blksize": "1024", "tsize": "0"}


def test_getOnATerminalShowsProgressAndSummary(tmp_path: Any) -> None:
    data = os.urandom(100_000)
    status, out, err, _ = runCommand(
        ["tftp", "get", "192.0.2.1", "f", str(tmp_path / "f"), "-w", "4", "-b", "1428"],
        {b"f": data},
        terminal=True,
    )
    assert status == 0 and out.count("\n") == 1  # the bar on stderr, the summary on stdout
    bar, summary = err.rstrip("\n"), out.rstrip("\n")
    assert bar.split("\r")[-1].startswith("f [####")
    assert "100% 97.7 KiB/97.7 KiB" in bar
    assert summary.startswith("received 100000 bytes in ")
    assert "blksize 1428, windowsize 4" in summary


def test_quietOnATerminal(tmp_path: Any) -> None:
    status, out, err, _ = runCommand(
        ["tftp", "get", "-q", "192.0.2.1", "f", str(tmp_path / "f")], {b"f": b"x"}, terminal=True
    )
    assert (status, out, err) == (0, "", "")


def test_putWithModeAndNoOptions(tmp_path: Any) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"a\nb\n")
    status, out, err, server = runCommand(
        ["tftp", "put", "192.0.2.1:6969", str(source), "remote.txt", "--mode", "netascii"]
        + ["--no-options"]
    )
    assert (status, err) == (0, "")
    assert server.uploads[b"remote.txt"] == b"a\r\nb\r\n"
    assert server.requests[0].mode == "netascii" and server.requests[0].options == {}


def test_getToStandardOutput(monkeypatch: Any) -> None:
    """LOCAL '-' writes the file to standard output, and nothing else goes there."""
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr("sys.stdout", stdout)
    data = os.urandom(2000)
    status, out, err, _ = runCommand(
        ["tftp", "get", "192.0.2.1", "f", "-"], {b"f": data}, terminal=True
    )
    assert (status, out, err) == (0, "", "")
    stdout.flush()
    assert stdout.buffer.getvalue() == data  # type: ignore[attr-defined]


def test_putFromStandardInput(monkeypatch: Any) -> None:
    data = os.urandom(2000)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    status, _, err, server = runCommand(["tftp", "put", "192.0.2.1", "-", "in.bin"])
    assert (status, err) == (0, "")
    assert server.uploads[b"in.bin"] == data
    assert server.requests[0].options == {"tsize": "2000"}


def test_getIntoADirectory(tmp_path: Any) -> None:
    """LOCAL naming a directory saves the file there under REMOTE's name, as cp does."""
    status, _, err, _ = runCommand(
        ["tftp", "get", "192.0.2.1", "a/b.bin", str(tmp_path)], {b"a/b.bin": b"x"}
    )
    assert (status, err) == (0, "")
    assert (tmp_path / "b.bin").read_bytes() == b"x"


def test_getIntoAMissingDirectory(tmp_path: Any) -> None:
    local = str(tmp_path / "no" / "x")
    status, _, err, server = runCommand(["tftp", "get", "192.0.2.1", "f", local])
    assert status == 1
    assert err == f"udpsuite tftp: get f: cannot write {local}: No such file or directory\n"
    assert server.requests == []
