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


def runInterrupted(argv: list[str], after: float) -> tuple[int, str, str, MemoryNetwork]:
    """Run a command on the in-memory network and interrupt it C{after} seconds in."""
    net = MemoryNetwork(seed=5)
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server.listenUDP(7007, UDPEchoProtocol(server))
    out, err = io.StringIO(), io.StringIO()
    interrupts = cli.Interrupts()
    net.clock.callLater(after, interrupts.interrupt)
    d = Deferred.fromCoroutine(cli.main(client, argv, Console(out, err), interrupts))
    status = net.runUntil(d)
    return status, out.getvalue(), err.getvalue(), net


def test_interruptEndsTheCommand() -> None:
    """An interrupt cancels the command: one line, exit status 130, no timer left."""
    status, out, err, net = runInterrupted(["send", "192.0.2.1:7007", "hi", "--wait", "60"], 2)
    assert (status, out) == (130, "192.0.2.1:7007: hi\n")
    assert err == "udpsuite send: interrupted\n"
    assert net.clock.seconds() == 2
    assert net.clock.getDelayedCalls() == []


def test_interruptedEchoPrintsItsSummaryFirst() -> None:
    """echo, interrupted, prints the statistics so far (as ping does), then one line."""
    status, out, err, net = runInterrupted(["echo", "192.0.2.1", "-c", "100"], 2.5)
    assert status == 130
    assert out.splitlines()[-2:-1] == ["3 probes sent, 3 received, 0.0% loss, time 2500 ms"]
    assert err == "udpsuite echo: interrupted\n"
    assert net.clock.getDelayedCalls() == []


class _ClosedPipe(io.StringIO):
    """A standard output whose reader went away after C{room} writes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, text: str) -> int:
        if self.room <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.room -= 1
        return super().write(text)


def test_closedOutputEndsTheCommandQuietly() -> None:
    """
    Standard output closing (EPIPE) stops the command at once without a word, exit
    status 141 (as a shell reports a death by SIGPIPE).
    """
    net = MemoryNetwork(seed=5)
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server.listenUDP(7007, UDPEchoProtocol(server))
    out, err = _ClosedPipe(room=2), io.StringIO()
    argv = ["echo", "192.0.2.1", "-c", "100"]
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    assert (status, err.getvalue()) == (141, "")
    assert net.clock.seconds() < 2
    assert net.clock.getDelayedCalls() == []


def test_eachEntryFindsItsCommand() -> None:
    """Every entry of COMMANDS loads the spec of the command it names, and no name repeats."""
    names = [entry.name for entry in cli.COMMANDS]
    assert len(set(names)) == len(names)
    for entry in cli.COMMANDS:
        spec = entry.load()
        assert spec.name == entry.name
        assert isinstance(entry.options(), spec.options)
        assert entry.description and "\n" not in entry.description


def test_usageLinesNameTheCommand() -> None:
    """Each usage line reads as a command line: program, command words, options, arguments."""
    options = cli.Options()
    assert options.getSynopsis() == "Usage: udpsuite [--version] COMMAND ..."
    options.parseOptions(["tftp", "get", "h", "f", "out"])
    assert options.subOptions.getSynopsis() == "Usage: udpsuite tftp [options] get|put ..."
    assert options.subOptions.subOptions.getSynopsis() == (
        "Usage: udpsuite tftp get [options] HOST[:PORT] REMOTE [LOCAL]"
    )
    options = cli.Options()
    options.parseOptions(["echo", "h"])
    assert options.subOptions.getSynopsis() == "Usage: udpsuite echo [options] HOST[:PORT]"
    assert "COMMAND" not in str(options.subOptions)


def test_versionIsTheSuites(capsys) -> None:  # type: ignore[no-untyped-def]
    """--version prints udpsuite's version, at the top and in every command."""
    import pytest

    from twisted_udpsuite import __version__

    for argv in (["--version"], ["echo", "--version"], ["tftp", "get", "--version"]):
        with pytest.raises(SystemExit) as raised:
            cli.Options().parseOptions(argv)
        assert raised.value.code == 0
        assert capsys.readouterr().out == f"udpsuite {__version__}\n", argv


def test_usageErrorPointsAtTheCommandsOwnHelp() -> None:
    """After a bad option the hint names the help of the command that was being parsed."""
    for argv, hint in (
        (["echo", "h", "-x"], "udpsuite echo --help"),
        (["tftp", "get", "--bogus"], "udpsuite tftp get --help"),
        (["tftp"], "udpsuite tftp --help"),
        (["nosuch"], "udpsuite --help"),
    ):
        status, _, err = runCommand(argv)
        assert status == 2 and err.endswith(f"(see: {hint})\n"), (argv, err)


def test_downloadPathTrailingSeparatorNamesADirectory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """
    A LOCAL ending in / names a directory: a missing one (or a file) is an error, and no
    file of that name is ever the destination.
    """
    import pytest
    from twisted.python import usage

    from twisted_udpsuite.command import downloadPath

    with pytest.raises(usage.UsageError, match="'.*newdir/': no such directory"):
        downloadPath("f", str(tmp_path / "newdir") + "/", "f")
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(usage.UsageError, match="afile/': not a directory"):
        downloadPath("f", str(tmp_path / "afile") + "/", "f")
    (tmp_path / "newdir").mkdir()
    assert downloadPath("f", str(tmp_path / "newdir") + "/", "f") == str(tmp_path / "newdir" / "f")
