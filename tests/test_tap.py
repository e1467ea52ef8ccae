"""Tests for the twistd plugin and C{twisted_udpsuite.tap}."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.protocol import DatagramProtocol
from twisted.plugin import getPlugins

from twisted_udpsuite import tap
from twisted_udpsuite.echo.service import EchoService
from twisted_udpsuite.testing import MemoryNetwork


def parse(argv: list[str]) -> tap.Options:
    options = tap.Options()
    options.parseOptions(argv)
    return options


def test_pluginIsFound() -> None:
    """twistd finds the udpsuite plugin and loads its options lazily."""
    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "udpsuite" in makers
    assert makers["udpsuite"].options is tap.Options


def test_everyServiceIsASubcommand() -> None:
    """Each registered service is a subcommand."""
    names = [name for name, _, _, _ in tap.Options.subCommands]
    assert names == [spec.name for spec in tap.SERVICES]
    assert "echo" in names


def test_noSubcommandStartsEverything() -> None:
    """
    With no subcommand every service that starts by default is selected with its defaults
    (ipmsg, which broadcasts to the LAN, is not).
    """
    options = parse([])
    assert [spec.name for spec, _ in options.selected] == [
        s.name for s in tap.SERVICES if s.startsByDefault
    ]
    assert "ipmsg" not in [spec.name for spec, _ in options.selected]
    assert all(sub["interface"] == "" for _, sub in options.selected)
    options = parse(["--interface", "127.0.0.1"])
    assert all(sub["interface"] == "127.0.0.1" for _, sub in options.selected)


def test_badOptionIsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad option or value exits with status 2 and one line on stderr, no usage dump."""
    for argv in (
        ["echo", "--port", "70000"],
        ["echo", "--bogus"],
        ["echo", "-i", "nohost"],
        ["nosuch"],
        ["--interface", "x"],
    ):
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("twistd udpsuite: error: ")


def test_makeServiceOnTheMemoryNetwork() -> None:
    """The echo service binds UDP and TCP on the same port, and unbinds on stop."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    top = tap.makeService(parse(["echo", "--port", "7", "--interface", "192.0.2.1"]), host)
    echo = top.getServiceNamed("echo")
    assert isinstance(echo, EchoService)
    top.startService()
    assert ("192.0.2.1", 7) in host.udpPorts
    assert host.tcpServers[0][0] == 7
    assert host.udpPorts[("192.0.2.1", 7)].maxPacketSize == 65536
    top.stopService()
    assert host.udpPorts == {}


def test_portZeroSharesTheNumber() -> None:
    """With port 0, TCP listens on the port number UDP was given."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    service = EchoService(port=0, reactor=host)
    service.startService()
    [(interface, number)] = host.udpPorts
    assert host.tcpServers[0][0] == number
    service.stopService()


def test_portInUseIsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """Under twistd, a port in use ends the process with one line and status 1."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    host.listenUDP(7007, DatagramProtocol())
    top = tap.makeService(parse(["echo"]), host)
    with pytest.raises(SystemExit) as e:
        top.startService()
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "twistd udpsuite: error: cannot listen on *:7007: Address already in use\n"
    )


def test_libraryServiceRaises() -> None:
    """Embedded directly, the service raises CannotListenError and binds nothing."""
    from twisted.internet.error import CannotListenError
    from twisted.internet.testing import RaisingMemoryReactor

    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    host.listenTCP = RaisingMemoryReactor(
        listenException=CannotListenError("", 7, OSError())
    ).listenTCP  # type: ignore[method-assign]
    service = EchoService(port=7, reactor=host)
    with pytest.raises(CannotListenError):
        service.startService()
    assert host.udpPorts == {}


def test_privilegedPortInUseIsOneLine(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """
    twistd binds in privilegedStartService: a port in use there is one line, status 1,
    the ports already bound closed again, and twistd's pid file removed.
    """
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    host.listenUDP(6969, DatagramProtocol())
    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text("1234")
    top = tap.makeService(_underTwistd(["-n", f"--pidfile={pidfile}"]), host)
    with pytest.raises(SystemExit) as e:
        top.privilegedStartService()
    assert e.value.code == 1
    assert capsys.readouterr().err == (
        "twistd udpsuite: error: cannot listen on *:6969: Address already in use\n"
    )
    assert list(host.udpPorts) == [("", 6969)]  # only the test's own: echo's were closed
    assert host.tcpServers and not pidfile.exists()


def test_daemonStartupErrorGoesToTwistd() -> None:
    """
    A daemon has no terminal: the error is an ordinary exception, which twistd hands to
    the process that started it (that one prints it and exits with status 1).
    """
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    host.listenUDP(7007, DatagramProtocol())
    top = tap.makeService(_underTwistd(["--pidfile=", "udpsuite", "echo"]), host)
    with pytest.raises(OSError, match="^cannot listen on \\*:7007: Address already in use$"):
        top.privilegedStartService()
    assert list(host.udpPorts) == [("", 7007)]


def _underTwistd(argv: list[str]) -> Any:
    """twistd's own options parsed from C{argv}; udpsuite's are its C{subOptions}."""
    from twisted.scripts.twistd import ServerOptions

    if "udpsuite" not in argv:
        argv = [*argv, "udpsuite"]
    config = ServerOptions()
    config.parseOptions(argv)
    return config.subOptions
