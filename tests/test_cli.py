"""Tests for the C{udpsuite} command line, run on the in-memory network."""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred

from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.echo.server import UDPEchoProtocol
from twisted_udpsuite.testing import MemoryNetwork


def runCommand(argv: list[str], **faults: float) -> tuple[int, str, str]:
    net = MemoryNetwork(seed=5, **faults)  # type: ignore[arg-type]
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server.listenUDP(7007, UDPEchoProtocol(server))
    out, err = io.StringIO(), io.StringIO()
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    return status, out.getvalue(), err.getvalue()


def test_echoPrintsEachRoundTripAndASummary() -> None:
    """udpsuite echo prints a line per reply and ping-style statistics; exit 0."""
    status, out, err = runCommand(["echo", "192.0.2.1:7007", "-c", "3", "-i", "0.5"])
    lines = out.splitlines()
    assert status == 0 and err == ""
    assert lines[0] == "ECHO 192.0.2.1:7007: 56 bytes per probe"
    assert lines[1].startswith("56 bytes from 192.0.2.1:7007: seq=0 time=")
    assert lines[4] == "--- 192.0.2.1:7007 echo statistics ---"
    assert lines[5] == "3 probes sent, 3 received, 0.0% loss, time 1000 ms"
    assert lines[6].startswith("rtt min/avg/max/mdev = ")


def test_echoDefaultPortAndOptionsAfterTheTarget() -> None:
    """The port defaults to the echo port; options may follow the target."""
    status, out, _ = runCommand(["echo", "192.0.2.1", "--count=2", "--interval", "0", "-q"])
    assert status == 0
    assert out.splitlines()[1] == "--- 192.0.2.1:7007 echo statistics ---"


def test_echoAllLostExitsOne() -> None:
    """No reply at all is exit status 1, each loss shown."""
    status, out, _ = runCommand(["echo", "192.0.2.9:7007", "-c", "2", "-W", "0.5"])
    assert status == 1
    assert "no reply from 192.0.2.9:7007: seq=1" in out
    assert "2 probes sent, 0 received, 100.0% loss" in out


def test_usageErrorsAreOneLine() -> None:
    """Bad commands, options and arguments: one line on stderr, exit status 2."""
    for argv in (
        [],
        ["nosuch"],
        ["echo"],
        ["echo", "h:0"],
        ["echo", "h:1", "-c", "x"],
        ["echo", "h:1", "--size", "99999"],
        ["echo", "[::1"],
    ):
        status, out, err = runCommand(argv)
        assert status == 2, argv
        assert out == "" and err.count("\n") == 1 and err.startswith("udpsuite: error: "), argv


def test_unresolvableHost() -> None:
    """A host that does not resolve is one line naming it, exit status 1."""
    status, _, err = runCommand(["echo", "no.such.host.invalid:7"])
    assert status == 1
    assert err.startswith("udpsuite echo: cannot resolve 'no.such.host.invalid'")


def test_downloadPath(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LOCAL as given; inside LOCAL if it is a directory; else named after REMOTE."""
    import pytest
    from twisted.python import usage

    from twisted_udpsuite.command import downloadPath

    assert downloadPath("a/b.bin", "out.bin", "b.bin") == "out.bin"
    assert downloadPath("a/b.bin", str(tmp_path), "b.bin") == str(tmp_path / "b.bin")
    assert downloadPath("a/b.bin", None, "b.bin") == "b.bin"
    for name in ("", ".", ".."):
        with pytest.raises(usage.UsageError, match="cannot name a local file"):
            downloadPath("a/", str(tmp_path), name)
