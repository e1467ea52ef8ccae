"""Tests for the responder service, its twistd options and C{udpsuite discover}."""

from __future__ import annotations

import importlib
import io
import ipaddress
import random
from typing import Any

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python import usage

from twisted_udpsuite import cli, ports, tap
from twisted_udpsuite.command import Console
from twisted_udpsuite.discovery import protocol
from twisted_udpsuite.discovery.protocol import Responder
from twisted_udpsuite.discovery.service import (
    Options,
    makeService,
    parseServiceEntry,
)
from twisted_udpsuite.discovery.wire import ServiceEntry
from twisted_udpsuite.files.service import SPEC as FILES
from twisted_udpsuite.service import Offer, ServiceOptions, ServiceSpec
from twisted_udpsuite.testing import MemoryNetwork


def parse(argv: list[str]) -> Options:
    options = Options()
    options.parseOptions(argv)
    return options


def test_options() -> None:
    """--name, --port, --interface, --service, --rate, --announce reach the service."""
    options = parse(
        ["--name", "alpha", "-p", "9000", "-i", "127.0.0.1", "--service", "web/tcp:80",
         "--service", "dns/udp:53", "--rate", "2", "--burst", "5", "--announce", "30"]
    )  # fmt: skip
    service = makeService(options, MemoryNetwork().addHost("127.0.0.2/8"))
    assert (service.port, service.interface) == (9000, "127.0.0.1")
    responder = service.responder
    assert responder.name == "alpha"
    assert responder.services == (ServiceEntry("web", "tcp", 80), ServiceEntry("dns", "udp", 53))
    assert responder.announceInterval == 30
    assert parse([])["port"] == ports.RESPONDER
    assert parse([])["name"]  # the host name


@pytest.mark.parametrize(
    "argv",
    [["--name", ""], ["--name", "x" * 65], ["--service", "web"], ["--service", "a/sctp:1"],
     ["--service", "a/tcp:70000"], ["--rate", "-1"], ["--rate", "0"], ["--announce", "x"]],
)  # fmt: skip
def test_badOptions(argv: list[str]) -> None:
    """Bad values are usage errors."""
    with pytest.raises(usage.UsageError):
        parse(argv)


def test_parseServiceEntry() -> None:
    assert parseServiceEntry("echo/udp:7007") == ServiceEntry("echo", "udp", 7007)


def test_twistdWithoutSubcommandDescribesTheOthers() -> None:
    """Under 'twistd udpsuite' with no subcommand, the responder lists the other services."""
    options = tap.Options()
    options.parseOptions([])
    sub = dict((spec.name, sub) for spec, sub in options.selected)["responder"]
    described = {str(s) for s in sub["services"]}
    assert {"echo/udp:7007", "echo/tcp:7007", "tftp/udp:6969", "files/tcp:8000"} <= described
    assert not any(s.startswith("responder/") for s in described)
    # One service alone describes only what its own --service options say.
    options = tap.Options()
    options.parseOptions(["responder", "--service", "x/udp:1"])
    assert [str(s) for s in options.selected[0][1]["services"]] == ["x/udp:1"]


def test_siblingsDescribedAsTheyOffer() -> None:
    """
    The responder advertises what each sibling's L{ServiceSpec} offers, on the ports its
    options give: a TCP-only service as /tcp, an extra port (files' --http-port) by its
    own name, an unset or any-free (0) port not at all, and nothing twice.
    """

    class WebOptions(ServiceOptions):
        defaultPort = 8080
        optParameters = [["admin-port", None, None, "", int]]

    web = ServiceSpec(
        "web",
        "TCP only",
        WebOptions,
        lambda options, reactor: Service(),
        offers=(Offer("web", "tcp"), Offer("admin", "tcp", "admin-port")),
    )
    silent = ServiceSpec("silent", "offers nothing", WebOptions, lambda o, r: Service())
    responder = parse(["--service", "web/tcp:8080"])
    webOptions, withAdmin, anyPort = WebOptions(), WebOptions(), WebOptions()
    withAdmin.parseOptions(["--port", "81", "--admin-port", "9090"])
    anyPort.parseOptions(["--port", "0", "--admin-port", "0"])
    responder.describeSiblings(
        [(web, webOptions), (web, withAdmin), (web, anyPort), (silent, webOptions)]
    )
    assert [str(s) for s in responder["services"]] == [
        "web/tcp:8080",
        "web/tcp:81",
        "admin/tcp:9090",
    ]
    files = FILES.options()
    files.parseOptions(["--port", "8000", "--http-port", "8081"])
    responder = parse([])
    responder.describeSiblings([(FILES, files)])
    assert [str(s) for s in responder["services"]] == ["files/tcp:8000", "http/tcp:8081"]


def test_serviceStartsAndStops() -> None:
    """The service binds on start, answers probes, and unbinds on stop."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("10.0.0.2/24")
    querier = net.addHost("10.0.0.1/24")
    top = tap.makeService(_tapOptions(["responder", "--name", "beta", "-p", "9998"]), host)
    top.startService()
    assert ("", 9998) in host.udpPorts
    found = net.runUntil(protocol.discover(querier, 9998, timeout=4, interfaces=["10.0.0.1/24"]))
    assert [r.name for r in found] == ["beta"]
    top.stopService()
    assert host.udpPorts == {}
    assert net.clock.getDelayedCalls() == []


def _tapOptions(argv: list[str]) -> tap.Options:
    options = tap.Options()
    options.parseOptions(argv)
    return options


def test_portInUseIsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """A taken port ends twistd with one line, like every other service."""
    net = MemoryNetwork()
    host = net.addHost("10.0.0.2/24")
    host.listenUDP(9998, Responder("other", (), host))
    top = tap.makeService(_tapOptions(["responder"]), host)
    with pytest.raises(SystemExit):
        top.startService()
    assert "cannot listen on *:9998" in capsys.readouterr().err


def runCommand(argv: list[str], monkeypatch: pytest.MonkeyPatch, names: Any = ("a",)) -> Any:
    net = MemoryNetwork(seed=2)
    client = net.addHost("192.0.2.1/24")
    for i, name in enumerate(names):
        host = net.addHost(f"192.0.2.{i + 10}/24")
        services = [ServiceEntry("echo", "udp", 7007)] if i == 0 else []
        host.listenUDP(9998, Responder(name, services, host, random=random.Random(i)))
    monkeypatch.setattr(
        protocol,
        "broadcastInterfaces",
        lambda: [("eth0", ipaddress.IPv4Interface("192.0.2.1/24"))],
    )
    out, err = io.StringIO(), io.StringIO()
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    assert net.clock.getDelayedCalls() == []
    return status, out.getvalue(), err.getvalue()


def test_discoverCommand(monkeypatch: pytest.MonkeyPatch) -> None:
    """udpsuite discover prints each responder once; names are made safe to print."""
    status, out, err = runCommand(
        ["discover", "--timeout", "4"], monkeypatch, names=("alpha", "b\x1b[2Jeta", "gamma")
    )
    assert status == 0
    lines = sorted(out.splitlines())
    assert lines == [
        "192.0.2.10:9998  alpha  echo/udp:7007",
        "192.0.2.11:9998  b\\x1b[2Jeta  -",
        "192.0.2.12:9998  gamma  -",
    ]
    assert err == "3 responders found\n"


def test_discoverNothingFound(monkeypatch: pytest.MonkeyPatch) -> None:
    """No responder: nothing on stdout, a count on stderr, exit status 1."""
    status, out, err = runCommand(["discover", "-t", "1", "-p", "9"], monkeypatch)
    assert (status, out, err) == (1, "", "0 responders found\n")


def test_discoverUnicastTarget(monkeypatch: pytest.MonkeyPatch) -> None:
    """--to probes one address directly (a responder bound to loopback, say)."""
    net = MemoryNetwork(seed=2)
    host = net.addHost("192.0.2.1/24")
    host.listenUDP(9998, Responder("local", (), host), "127.0.0.1")
    monkeypatch.setattr(protocol, "broadcastInterfaces", lambda: [])
    out, err = io.StringIO(), io.StringIO()
    argv = ["discover", "--to", "127.0.0.1", "-t", "2", "--attempts", "1"]
    status = net.runUntil(Deferred.fromCoroutine(cli.main(host, argv, Console(out, err))))
    assert status == 0 and out.getvalue() == "127.0.0.1:9998  local  -\n"


@pytest.mark.parametrize(
    "argv",
    [["discover", "-t", "x"], ["discover", "-t", "0"], ["discover", "--max-delay", "6"],
     ["discover", "-p", "0"], ["discover", "--attempts", "0"], ["discover", "extra"]],
)  # fmt: skip
def test_discoverUsageErrors(argv: list[str]) -> None:
    """Bad options are one line on stderr and exit status 2."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    out, err = io.StringIO(), io.StringIO()
    status = net.runUntil(Deferred.fromCoroutine(cli.main(host, argv, Console(out, err))))
    assert status == 2 and err.getvalue().count("\n") == 1 and out.getvalue() == ""


@pytest.mark.parametrize("package", ["twisted_udpsuite.discovery", "twisted_udpsuite.chat"])
def test_packageExports(package: str) -> None:
    """Each name a protocol package's C{__all__} lists is importable from the package."""
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert {"Responder", "discover", "ServiceEntry", "MAX_DATAGRAM"} & set(module.__all__)
    if package.endswith("discovery"):
        assert module.discover is protocol.discover and module.ServiceEntry is ServiceEntry
    else:
        assert module.MAX_DATAGRAM == 65536
