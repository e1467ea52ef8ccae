"""
Tests for L{twisted_udpsuite.activation}: which inherited socket each listener adopts,
and the TFTP service's inetd mode, which exits when idle.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath

from tests.helpers import successResultOf
from twisted_udpsuite.activation import (
    ActivationError,
    InheritedSocket,
    assign,
    describe,
    fromEnvironment,
)
from twisted_udpsuite.service import Listener
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.service import InetdTFTPService


def _suite() -> list[Listener]:
    """Listeners as C{twistd udpsuite} (every service, default ports) has them."""
    udp, tcp = DatagramProtocol, ServerFactory
    return [
        Listener("echo", "udp", 7007, udp()),
        Listener("echo", "tcp", 7007, tcp(), followsPrevious=True),
        Listener("files", "tcp", 8000, tcp()),
        Listener("files-http", "tcp", 8080, tcp()),
        Listener("tftp", "udp", 6969, udp()),
        Listener("chatroom", "udp", 9999, udp()),
        Listener("responder", "udp", 9998, udp()),
    ]


def _socket(fd: int, name: str, transport: str, port: int) -> InheritedSocket:
    return InheritedSocket(fd, name, socket.AF_INET, transport, "0.0.0.0", port)


def _adopted(listeners: list[Listener]) -> dict[tuple[str, str], int]:
    return {(x.name, x.transport): x.inherited for x in listeners if x.inherited is not None}


def test_byName() -> None:
    """
    A socket named like a listener goes to that listener of its own type, whatever
    its port: one C{FileDescriptorName=echo} serves echo's UDP and TCP.
    """
    listeners = _suite()
    assign(
        [
            _socket(3, "tftp", "udp", 69),
            _socket(4, "echo", "udp", 7),
            _socket(5, "echo", "tcp", 7),
            _socket(6, "files-http", "tcp", 80),
        ],
        listeners,
    )
    assert _adopted(listeners) == {
        ("tftp", "udp"): 3,
        ("echo", "udp"): 4,
        ("echo", "tcp"): 5,
        ("files-http", "tcp"): 6,
    }


def test_byNameWithTransport() -> None:
    """C{NAME-udp} and C{NAME-tcp} name the transport too; the wrong one is an error."""
    listeners = _suite()
    assign([_socket(3, "echo-tcp", "tcp", 7), _socket(4, "tftp-udp", "udp", 69)], listeners)
    assert _adopted(listeners) == {("echo", "tcp"): 3, ("tftp", "udp"): 4}
    with pytest.raises(ActivationError, match="'echo-udp' .*TCP.* is named UDP"):
        assign([_socket(5, "echo-udp", "tcp", 7)], _suite())


def test_byTypeAndPort() -> None:
    """
    A socket without a listener's name (none, systemd's default the unit's name) goes to
    the listener of its type configured with its port number.
    """
    listeners = _suite()
    assign(
        [
            _socket(3, "", "udp", 6969),
            _socket(4, "udpsuite.socket", "tcp", 7007),
            _socket(5, "udpsuite.socket", "udp", 7007),
        ],
        listeners,
    )
    assert _adopted(listeners) == {("tftp", "udp"): 3, ("echo", "tcp"): 4, ("echo", "udp"): 5}


@pytest.mark.parametrize(
    "sockets, message",
    [
        ([_socket(3, "tftp", "tcp", 69)], r"'tftp' \(fd 3, TCP 0.0.0.0:69\): no TCP listener"),
        ([_socket(3, "", "udp", 69)], r"no service here listens on UDP port 69$"),
        ([_socket(3, "x", "tcp", 0)], r"no service here listens on TCP port 0$"),
        ([_socket(3, "tftp", "udp", 69), _socket(4, "tftp", "udp", 70)], r"fd 4.*\(twice\)$"),
        ([_socket(3, "", "1", 69)], r"no service here listens on 1 port 69"),
    ],
)
def test_unmatchedIsAnError(sockets: list[InheritedSocket], message: str) -> None:
    """A socket no listener takes (or a second one for a listener) is an error."""
    with pytest.raises(ActivationError, match=message):
        assign(sockets, _suite())


@pytest.fixture
def passed() -> Iterator[tuple[int, list[socket.socket]]]:
    """A UDP and a TCP socket on consecutive descriptors, as systemd passes them."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    udp.bind(("127.0.0.1", 0))
    tcp.bind(("::1", 0))
    start = 900
    os.dup2(udp.fileno(), start)
    os.dup2(tcp.fileno(), start + 1)
    try:
        yield start, [udp, tcp]
    finally:
        for fd in (start, start + 1):
            os.close(fd)
        udp.close()
        tcp.close()


def test_fromEnvironment(passed: tuple[int, list[socket.socket]]) -> None:
    """
    C{LISTEN_PID}/C{LISTEN_FDS}/C{LISTEN_FDNAMES} for this process describe its sockets
    (systemd's "unknown" and a missing name are no name); the variables are removed.
    """
    start, (udp, tcp) = passed
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "tftp"}
    found = fromEnvironment(environ, start)
    assert environ == {}
    assert found == [
        InheritedSocket(start, "tftp", socket.AF_INET, "udp", "127.0.0.1", udp.getsockname()[1]),
        InheritedSocket(start + 1, "", socket.AF_INET6, "tcp", "::1", tcp.getsockname()[1]),
    ]
    assert str(found[1]) == f"socket (fd {start + 1}, TCP [::1]:{tcp.getsockname()[1]})"
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "unknown"}
    assert [s.name for s in fromEnvironment(environ, start)] == [""]


def test_fromEnvironmentOfAnotherProcess(passed: tuple[int, list[socket.socket]]) -> None:
    """Variables meant for another pid (our parent's) give nothing, and are removed too."""
    start, _ = passed
    environ = {"LISTEN_PID": str(os.getppid()), "LISTEN_FDS": "2", "OTHER": "x"}
    assert fromEnvironment(environ, start) == []
    assert environ == {"OTHER": "x"}
    assert fromEnvironment({}, start) == []


def test_describeRefusesNonSockets(tmp_path: Any) -> None:
    """A descriptor that is not an IP socket cannot be adopted."""
    read, write = os.pipe()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ActivationError, match="is not a socket"):
            describe(read)
        with pytest.raises(ActivationError, match="is not an IP socket"):
            describe(unix.fileno())
    finally:
        os.close(read)
        os.close(write)
        unix.close()


class _Session:
    """Stands for a running transfer in the server's session table."""


def test_inetdExitsWhenIdle(tmp_path: Any) -> None:
    """
    In inetd mode the service adopts the socket, and stops once neither a request nor a
    transfer was seen for the idle timeout: a request or a running transfer restarts it.
    """
    reactor = MemoryReactorClock()
    stopped: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inherited:
        service = InetdTFTPService(
            FilesystemBackend(FilePath(str(tmp_path))),
            fd=inherited.fileno(),
            idleTimeout=60,
            reactor=reactor,
            stop=lambda: stopped.append(reactor.seconds()),
        )
        service.startService()
        assert [a[:2] for a in reactor.adoptedPorts] == [(inherited.fileno(), socket.AF_INET)]
        reactor.advance(30)
        service.protocol.datagramReceived(b"\x00\x09junk", ("127.0.0.1", 4000))
        reactor.advance(59)
        assert stopped == []
        service.protocol.sessions[("127.0.0.1", 4001)] = _Session()  # type: ignore[assignment]
        reactor.advance(1)  # 60 s since the request, but a transfer runs
        reactor.advance(100)
        assert stopped == []
        del service.protocol.sessions[("127.0.0.1", 4001)]  # last seen running at 190 s
        reactor.advance(59)
        assert stopped == []
        reactor.advance(1)
        assert stopped == [250.0]
        successResultOf(service.stopService())
        assert reactor.getDelayedCalls() == []
