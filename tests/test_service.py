"""Tests for L{twisted_udpsuite.service}: the option helpers and the listening service."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.filepath import FilePath
from zope.interface import implementer

from tests.helpers import successResultOf
from twisted_udpsuite.drain import IDrainable
from twisted_udpsuite.service import (
    TCP_BACKLOG,
    Listener,
    ListeningService,
    checkInterface,
    checkPort,
    numberOption,
)
from twisted_udpsuite.testing import MemoryNetwork


@pytest.mark.parametrize(
    "coerce, value, expected",
    [
        (numberOption("n", int, low=1), "5", 5),
        (numberOption("n", low=0, high=2), "2", 2.0),
        (numberOption("n", above=0), "0.5", 0.5),
        (numberOption("n", low=0, zeroMeansNone=True), "0", None),
        (numberOption("n", low=0, zeroMeansNone=True), "3", 3.0),
    ],
)
def test_numberOptionAccepts(coerce, value, expected) -> None:  # type: ignore[no-untyped-def]
    """Numbers of the right kind within the bounds pass (0 may mean 'none')."""
    assert coerce(value) == expected


@pytest.mark.parametrize(
    "coerce, value, message",
    [
        (numberOption("count", int, low=1), "x", "--count: 'x' is not a whole number"),
        (numberOption("count", int, low=1), "1.5", "--count: '1.5' is not a whole number"),
        (numberOption("count", int, low=1), "0", "--count: must be at least 1"),
        (numberOption("rate", low=0, high=2), "3", "--rate: must be from 0 to 2"),
        (numberOption("rate", high=2), "3", "--rate: must be at most 2"),
        (numberOption("wait", above=0), "0", "--wait: must be greater than 0"),
        (numberOption("wait", above=0), "nan", "--wait: must be greater than 0"),
        (numberOption("wait", low=0), "inf", "--wait: must be at least 0"),
        (numberOption("wait", low=0), "ten", "--wait: 'ten' is not a number"),
    ],
)
def test_numberOptionRefuses(coerce, value, message) -> None:  # type: ignore[no-untyped-def]
    """Out-of-range, non-finite or non-numeric values are one clear UsageError."""
    with pytest.raises(usage.UsageError) as e:
        coerce(value)
    assert str(e.value) == message


def test_portAndInterface() -> None:
    """Ports are 0..65535; interfaces are '', '::' or an IP address."""
    assert checkPort("0") == 0 and checkPort("65535") == 65535
    for bad in ("65536", "-1", "x", ""):
        with pytest.raises(usage.UsageError):
            checkPort(bad)
    assert checkInterface("") == "" and checkInterface("::") == "::"
    assert checkInterface("127.0.0.1") == "127.0.0.1"
    with pytest.raises(usage.UsageError):
        checkInterface("localhost")


class _Port:
    """A bound port whose C{stopListening} fires when the test says."""

    def __init__(self, kind: str, number: int, protocol: Any, fd: int | None = None) -> None:
        self.kind, self.number, self.protocol, self.fd = kind, number, protocol, fd
        self.stopping: Deferred[None] | None = None

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP" if self.kind == "tcp" else "UDP", "0.0.0.0", self.number)

    def stopListening(self) -> Deferred[None]:
        self.stopping = Deferred()
        return self.stopping


class _Reactor:
    """Records binds and adoptions; C{failOn} makes listening on that port number fail."""

    def __init__(self, failOn: int | None = None) -> None:
        self.failOn = failOn
        self.ports: list[_Port] = []

    def _port(self, kind: str, number: int, protocol: Any, fd: int | None = None) -> _Port:
        if number == self.failOn:
            raise CannotListenError("", number, OSError(13, "Permission denied"))
        port = _Port(kind, number, protocol, fd)
        self.ports.append(port)
        return port

    def listenUDP(self, port: int, protocol: Any, interface: str = "", **kw: Any) -> _Port:
        return self._port("udp", port, protocol)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> _Port:
        return self._port("tcp", port, factory)

    def adoptDatagramPort(self, fd: int, family: int, protocol: Any, **kw: Any) -> _Port:
        return self._port("udp", 69, protocol, fd)

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> _Port:
        return self._port("tcp", 7, factory, fd)


def _listeners() -> list[Listener]:
    return [
        Listener("a", "udp", 1069, DatagramProtocol()),
        Listener("a", "tcp", 1069, ServerFactory()),
        Listener("b", "tcp", 1070, ServerFactory()),
    ]


def test_bindsWhilePrivileged() -> None:
    """
    L{ListeningService.privilegedStartService} binds every port (twistd calls it before
    dropping root); the C{startService} that follows binds nothing again.
    """
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    service = ListeningService(_listeners(), host)
    service.privilegedStartService()
    assert service.bound and not service.running
    assert ("", 1069) in host.udpPorts
    assert [t[0] for t in host.tcpServers] == [1069, 1070]
    # A burst of clients must not overflow the accept queue (Twisted's default is 50).
    assert [t[2] for t in host.tcpServers] == [TCP_BACKLOG] * 2 and TCP_BACKLOG >= 1024
    service.startService()
    assert service.running
    assert len(host.udpPorts) == 1 and len(host.tcpServers) == 2
    successResultOf(service.stopService())
    assert host.udpPorts == {} and not service.bound


@pytest_twisted.ensureDeferred
async def test_tcpListenersTakeABurstOfClients() -> None:
    """
    A real TCP listener's accept queue holds L{TCP_BACKLOG} connections (as far as
    C{net.core.somaxconn} allows), as C{ss} shows: 200 clients connecting at once to
    Twisted's default of 50 waited a second for their SYN to be sent again.
    """
    from twisted.internet import reactor

    service = ListeningService([Listener("t", "tcp", 0, ServerFactory(), "127.0.0.1")], reactor)
    service.privilegedStartService()
    try:
        port = service.listeners[0].listening.getHost().port
        shown = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        somaxconn = int(FilePath("/proc/sys/net/core/somaxconn").getContent())
        assert int(shown[2]) == min(TCP_BACKLOG, somaxconn), shown  # (Send-Q: the backlog)
    finally:
        await service.stopService()


def test_startServiceBindsWhenNothingDid() -> None:
    """Without the privileged step (a library user), L{startService} binds."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    service = ListeningService(_listeners()[:1], host)
    service.startService()
    assert ("", 1069) in host.udpPorts
    successResultOf(service.stopService())


def test_partialBindUndone() -> None:
    """A port that cannot be bound closes those bound before it, and the error is raised."""
    reactor = _Reactor(failOn=1070)
    service = ListeningService(_listeners(), reactor)
    with pytest.raises(CannotListenError):
        service.privilegedStartService()
    assert [p.kind for p in reactor.ports] == ["udp", "tcp"]
    assert all(p.stopping is not None for p in reactor.ports)
    assert not service.bound


def test_oneListeningLinePerPort() -> None:
    """Each bound port is one "listening" log line with its name, address and transport."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    listeners = _listeners()
    listeners[0].detail = ", serving /srv"
    service = ListeningService(listeners, host)
    with capturedLogs() as events:
        service.startService()
    lines = [e for e in events if "listening on" in e.get("log_format", "")]
    assert [formatEvent(e) for e in lines] == [
        "a listening on *:1069 (UDP), serving /srv",
        "a listening on *:1069 (TCP)",
        "b listening on *:1070 (TCP)",
    ]
    successResultOf(service.stopService())


def test_stopWaitsForEveryPort() -> None:
    """L{stopService} fires only when every port has closed."""
    reactor = _Reactor()
    service = ListeningService(_listeners(), reactor)
    service.startService()
    stopped: list[object] = []
    service.stopService().addBoth(stopped.append)
    assert not service.running
    assert all(p.stopping is not None for p in reactor.ports)
    for port in reactor.ports[:-1]:
        assert port.stopping is not None
        port.stopping.callback(None)
        assert stopped == []
    last = reactor.ports[-1].stopping
    assert last is not None
    last.callback(None)
    assert len(stopped) == 1


@implementer(IDrainable)
class _Draining(DatagramProtocol):
    def __init__(self) -> None:
        self.drained: Deferred[None] | None = None
        self.timeout: float | None = None

    def drain(self, timeout: float) -> Deferred[None]:
        self.timeout = timeout
        self.drained = Deferred()
        return self.drained


def test_drainBeforeClosing() -> None:
    """An L{IDrainable} protocol drains first; the ports close once it has finished."""
    reactor = _Reactor()
    protocol = _Draining()
    service = ListeningService([Listener("t", "udp", 69, protocol)], reactor)
    service.drainTimeout = 7.5
    service.startService()
    stopped: list[object] = []
    service.stopService().addBoth(stopped.append)
    [port] = reactor.ports
    assert protocol.drained is not None and port.stopping is None
    assert protocol.timeout == 7.5
    protocol.drained.callback(None)
    assert port.stopping is not None and stopped == []
    port.stopping.callback(None)
    assert len(stopped) == 1


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_adoptsInheritedSockets(family: int) -> None:
    """
    A listener with an inherited descriptor adopts it (UDP with
    C{adoptDatagramPort}, TCP with C{adoptStreamPort}) instead of binding, keeps
    the descriptor open for a restart, and logs that it was inherited.
    """
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        reactor = _Reactor()
        listeners = _listeners()[:2]
        listeners[0].inherited, listeners[1].inherited = udp.fileno(), tcp.fileno()
        service = ListeningService(listeners, reactor)
        with capturedLogs() as events:
            service.privilegedStartService()
        assert [(p.kind, p.fd) for p in reactor.ports] == [
            ("udp", udp.fileno()),
            ("tcp", tcp.fileno()),
        ]
        assert sum("inherited" in e.get("how", "") for e in events) == 2
        for port in reactor.ports:
            port.stopListening = lambda: succeed(None)  # type: ignore[method-assign]
        successResultOf(service.stopService())
        assert udp.fileno() != -1 and tcp.fileno() != -1
    finally:
        udp.close()
        tcp.close()


def test_adoptedSocketsMadeNonBlocking() -> None:
    """systemd and inetd hand sockets over blocking; a reactor needs them non-blocking."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inherited:
        fd = inherited.fileno()
        assert os.get_blocking(fd) is True
        listener = Listener("t", "udp", 69, DatagramProtocol(), inherited=fd)
        ListeningService([listener], _Reactor()).startService()
        assert os.get_blocking(fd) is False


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_adoptedDatagramSocketsLoseBroadcast(family: int) -> None:
    """
    A UDP socket handed over with C{SO_BROADCAST} (systemd's C{Broadcast=yes}) is adopted
    without it: a service that answers must not be able to answer a broadcast address.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as inherited:
        inherited.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        listener = Listener("t", "udp", 69, DatagramProtocol(), inherited=inherited.fileno())
        ListeningService([listener], _Reactor()).startService()
        assert inherited.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0


def test_failedDrainStillCloses() -> None:
    """A drain that fails is logged, and the ports close all the same."""
    reactor = _Reactor()
    protocol = _Draining()
    service = ListeningService([Listener("t", "udp", 69, protocol)], reactor)
    service.startService()
    stopped: list[object] = []
    with capturedLogs() as events:
        service.stopService().addBoth(stopped.append)
        assert protocol.drained is not None
        protocol.drained.errback(RuntimeError("drain broke"))
    [port] = reactor.ports
    assert port.stopping is not None
    port.stopping.callback(None)
    assert len(stopped) == 1 and not service.bound
    assert [e["log_failure"].value.args for e in events if "log_failure" in e] == [("drain broke",)]
