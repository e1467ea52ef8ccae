"""
The private Twisted behaviour L{twisted_udpsuite.twistedprivate} wraps, checked against the
installed Twisted: each failure names what changed (real sockets on loopback only).
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.copyright import version as twistedVersion
from twisted.internet import abstract, udp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

import twisted_udpsuite
from twisted_udpsuite.twistedprivate import (
    SocketBoundPort,
    earliestCall,
    isResponseDone,
    overrideDoRead,
    popDueCall,
    restoreDoRead,
)


def _changed(what: str) -> str:
    return (
        f"Twisted {twistedVersion} changed {what}, which "
        "twisted_udpsuite.twistedprivate relies on: adapt that module (and only it)"
    )


def test_privateNamesExist() -> None:
    """Every private name the wrappers use is still there, with the shape they call."""
    assert callable(getattr(udp.Port, "_bindSocket", None)), _changed("udp.Port._bindSocket")
    assert "self._bindSocket()" in inspect.getsource(udp.Port.startListening), _changed(
        "udp.Port.startListening (it no longer calls _bindSocket)"
    )
    adopt = getattr(udp.Port, "_fromListeningDescriptor", None)
    assert adopt is not None, _changed("udp.Port._fromListeningDescriptor")
    assert list(inspect.signature(adopt).parameters) == [
        "reactor",
        "fd",
        "addressFamily",
        "protocol",
        "maxPacketSize",
    ], _changed("the parameters of udp.Port._fromListeningDescriptor")
    clock = Clock()
    assert isinstance(getattr(clock, "calls", None), list), _changed("Clock.calls")
    assert callable(getattr(clock, "_sortCalls", None)), _changed("Clock._sortCalls")


class _Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived: Deferred[None] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        self.arrived.callback(None)


class _RecordingPort(SocketBoundPort):
    bound: list[tuple[int, bool]]

    def socketBound(self) -> None:
        reading = self in self.reactor.getReaders()
        self.bound = [*getattr(self, "bound", []), (self.socket.getsockname()[1], reading)]


async def _roundTrip(reactor: Any, port: SocketBoundPort, protocol: _Recorder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"ping", ("127.0.0.1", port.getHost().port))
    await protocol.arrived.addTimeout(5, reactor)
    assert protocol.received == [b"ping"]


@pytest_twisted.ensureDeferred
async def test_socketBoundOnListen(reactor: Any) -> None:
    """L{SocketBoundPort.socketBound} is called once, with the socket bound, before reading."""
    protocol = _Recorder()
    port = _RecordingPort(0, protocol, "127.0.0.1", 8192, reactor)
    port.listen()
    try:
        assert port.bound == [(port.getHost().port, False)], _changed(
            "when udp.Port._bindSocket runs (socketBound must see a bound, unread socket)"
        )
        assert port.bound[0][0] != 0
        await _roundTrip(reactor, port, protocol)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_adoptedSocket(reactor: Any) -> None:
    """
    L{SocketBoundPort.adopt} gives a port of the subclass on a socket bound elsewhere; it
    listens on that socket's address and still calls C{socketBound}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        bound.setblocking(False)
        protocol = _Recorder()
        port = _RecordingPort.adopt(reactor, bound.fileno(), socket.AF_INET, protocol, 8192)
    assert type(port) is _RecordingPort, _changed("udp.Port._fromListeningDescriptor's class")
    port.listen()
    try:
        assert port.bound == [(port.getHost().port, False)], _changed(
            "how an adopted udp.Port's socket is set up (socketBound was not called)"
        )
        await _roundTrip(reactor, port, protocol)
    finally:
        await port.stopListening()


def test_callsInTimeOrder() -> None:
    """
    L{earliestCall} and L{popDueCall} see the clock's calls in time order, a rescheduled
    one too (C{Clock} sorts lazily), ties in the order they were made.
    """
    clock = Clock()
    ran: list[str] = []
    late = clock.callLater(3, ran.append, "late")
    clock.callLater(2, ran.append, "tie one")
    clock.callLater(2, ran.append, "tie two")
    assert earliestCall(clock) is not late
    late.reset(1)
    assert earliestCall(clock) is late, _changed("Clock.calls or Clock._sortCalls")
    assert popDueCall(clock, 0.5) is None
    order = []
    while (call := popDueCall(clock, 2)) is not None:
        order.append(call.args[0])
        assert call not in clock.getDelayedCalls(), _changed("Clock.calls")
    assert order == ["late", "tie one", "tie two"]
    assert earliestCall(clock) is None
    assert ran == []


class _Received(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.more: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        more, self.more = self.more, Deferred()
        more.callback(None)


@pytest_twisted.ensureDeferred
async def test_overrideDoRead(reactor: Any) -> None:
    """
    While L{overrideDoRead} is in place the reactor calls the replacement when the socket
    is readable (the protocol gets nothing); after L{restoreDoRead}, the transport's own.
    """
    server = _Received()
    listening = reactor.listenTCP(0, Factory.forProtocol(lambda: server), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", listening.getHost().port), timeout=5)
    try:
        client.sendall(b"first")
        await server.more.addTimeout(5, reactor)
        assert server.data == b"first"
        transport = server.transport
        taken: list[bytes] = []
        seen: Deferred[None] = Deferred()

        def readInstead() -> None:
            taken.append(transport.socket.recv(100))  # type: ignore[union-attr]
            if not seen.called:
                seen.callback(None)

        overrideDoRead(transport, readInstead)
        client.sendall(b"second")
        await seen.addTimeout(5, reactor)
        assert taken == [b"second"] and server.data == b"first", _changed(
            "how the reactor calls a transport's doRead"
        )
        restoreDoRead(transport, lambda: None)  # not the one in place: left alone
        assert vars(transport)["doRead"] is readInstead
        restoreDoRead(transport, readInstead)
        assert "doRead" not in vars(transport)
        client.sendall(b"third")
        await server.more.addTimeout(5, reactor)
        assert server.data == b"firstthird"
    finally:
        client.close()
        await listening.stopListening()


def test_overrideDoReadNeedsARealTransport() -> None:
    """An in-memory transport has no C{doRead} for a reactor to call: a clear TypeError."""
    transport = StringTransport()
    assert not isinstance(transport, abstract.FileDescriptor)
    with pytest.raises(TypeError, match="not a transport the reactor reads"):
        overrideDoRead(transport, lambda: None)


def test_responseDone() -> None:
    """L{isResponseDone} knows the reason Twisted's HTTP client ends a whole body with."""
    from twisted.web.client import ResponseDone

    assert isResponseDone(ResponseDone()), _changed("twisted.web._newclient.ResponseDone")
    assert not isResponseDone(ConnectionDone()) and not isResponseDone(None)


#: In a fresh process: optionally import pyOpenSSL, optionally call withoutTLS, then import
#: the reactor, make one TCP connection on 127.0.0.1 and echo a line over it, and report
#: what the connection offers and which TLS modules were loaded.
_TCP_AFTER_BLOCK = """
import json, sys
mode = sys.argv[1]
if mode == "preloaded":
    import OpenSSL.SSL
from twisted_udpsuite.twistedprivate import withoutTLS
if mode != "unblocked":
    withoutTLS()
from twisted.internet import reactor, tcp
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.protocol import ClientFactory, Factory, Protocol

report = {}

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

class Client(Protocol):
    def connectionMade(self):
        report["offersTLS"] = ITLSTransport.providedBy(self.transport)
        report["startTLS"] = hasattr(self.transport, "startTLS")
        self.transport.write(b"hello")
    def dataReceived(self, data):
        report["echoed"] = report.get("echoed", "") + data.decode()
        if report["echoed"] == "hello":
            self.transport.loseConnection()
            reactor.stop()

server = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
reactor.connectTCP("127.0.0.1", server.getHost().port, ClientFactory.forProtocol(Client))
reactor.callLater(20, reactor.stop)
reactor.run()
report["tcpOffersTLS"] = ITLSTransport.implementedBy(tcp.Client)
report["loaded"] = sorted(
    m for m, module in sys.modules.items()
    if module is not None and m.partition(".")[0] in ("OpenSSL", "cryptography")
)
print(json.dumps(report))
"""


def _tcpAfterBlock(mode: str) -> dict[str, Any]:
    suite = str(Path(twisted_udpsuite.__file__).parents[1])  # the suite these tests import
    env = {**os.environ, "PYTHONPATH": suite}
    done = subprocess.run(
        [sys.executable, "-c", _TCP_AFTER_BLOCK, mode],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_withoutTLS() -> None:
    """
    After L{withoutTLS}, the reactor imports without pyOpenSSL, Twisted's TCP offers no TLS,
    and a TCP connection on 127.0.0.1 works; without it, the same Twisted offers TLS (so the
    check can tell); and it leaves an already imported pyOpenSSL alone.
    """
    blocked = _tcpAfterBlock("blocked")
    assert blocked["echoed"] == "hello", _changed("TCP without pyOpenSSL")
    assert blocked["loaded"] == [], _changed("how twisted.internet.tcp imports pyOpenSSL")
    assert not blocked["offersTLS"] and not blocked["startTLS"] and not blocked["tcpOffersTLS"]
    unblocked = _tcpAfterBlock("unblocked")
    assert unblocked["echoed"] == "hello"
    assert unblocked["offersTLS"] and unblocked["startTLS"] and unblocked["tcpOffersTLS"]
    assert "OpenSSL.SSL" in unblocked["loaded"]
    preloaded = _tcpAfterBlock("preloaded")
    assert preloaded["echoed"] == "hello" and preloaded["offersTLS"] and preloaded["tcpOffersTLS"]
