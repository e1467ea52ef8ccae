"""UDP ports that report ICMP port unreachable (IP_RECVERR), on real loopback sockets."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.unreachable import IUnreachableReceiver, UnreachableReportingPort, listenUDP


@implementer(IUnreachableReceiver)
class _Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.unreachable: list[tuple[str, int]] = []
        self.received: list[bytes] = []
        self.waiting: Deferred[None] | None = None

    def destinationUnreachable(self, addr: tuple[str, int]) -> None:
        self.unreachable.append(addr)
        self._wake()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)
        self._wake()

    def _wake(self) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def next(self, reactor: Any) -> None:
        self.waiting = Deferred()
        await self.waiting.addTimeout(5, reactor)


def _closedPort(host: str) -> tuple[str, int]:
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((host, 0))
    address = probe.getsockname()[:2]
    probe.close()
    return address


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest_twisted.ensureDeferred
async def test_closedPortIsReportedAndThePortGoesOn(reactor: Any, host: str) -> None:
    """
    A datagram to a closed port comes back as ICMP port unreachable: reported with its
    destination, and the port keeps working (Twisted's epoll reactor would have stopped
    a plain udp.Port on that error).
    """
    if not socket.has_ipv6 and ":" in host:
        pytest.skip("no IPv6")
    recorder = _Recorder()
    port = listenUDP(reactor, 0, recorder, host)
    assert isinstance(port, UnreachableReportingPort)
    live = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    live.bind((host, 0))
    try:
        for _ in range(2):
            dead = _closedPort(host)
            port.write(b"hello", dead)
            await recorder.next(reactor)
            assert recorder.unreachable[-1] == dead
        assert port.connected
        live.sendto(b"still here", (host, port.getHost().port))
        await recorder.next(reactor)
        assert recorder.received == [b"still here"]
        port.write(b"to a live port", live.getsockname()[:2])
        assert live.recv(100) == b"to a live port"
        assert len(recorder.unreachable) == 2
    finally:
        live.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_errorQueueReadOnlyWhenAWakeUpReadNothing(reactor: Any) -> None:
    """
    A read that drained datagrams does not also ask the error queue (one system call a
    lock-step block would pay); a wake-up that finds nothing to read does, since a send may
    have taken the error the wake-up was for while its report waits in the queue.
    """
    recorder = _Recorder()
    port = listenUDP(reactor, 0, recorder, "127.0.0.1")
    asked: list[int | None] = []
    readErrors = port.readErrors
    port.readErrors = lambda: asked.append(readErrors()) or asked[-1]  # type: ignore[method-assign]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as live:
        try:
            for data in (b"one", b"two"):
                live.sendto(data, ("127.0.0.1", port.getHost().port))
            port.doRead()  # loopback delivers within sendto: both are queued already
            assert recorder.received == [b"one", b"two"] and asked == []
            port.doRead()
            assert asked == [0]
            dead = _closedPort("127.0.0.1")
            port.write(b"hello", dead)
            port.doRead()  # the refusal is the socket's pending error: read from the queue
            assert recorder.unreachable == [dead]
        finally:
            await port.stopListening()


def test_memoryNetworkModelsTheOption() -> None:
    """On the in-memory network the port reports too, unconnected, like IP_RECVERR."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    net.addHost("192.0.2.2/24")
    recorder = _Recorder()
    port = listenUDP(host, 0, recorder)
    port.write(b"x", ("192.0.2.2", 4000))
    net.pump()
    assert recorder.unreachable == [("192.0.2.2", 4000)]
    plain = _Recorder()
    host.listenUDP(0, plain).write(b"x", ("192.0.2.2", 4000))
    net.pump()
    assert plain.unreachable == []
    assert net.clock.getDelayedCalls() == []
