"""
A UDP echo server bound to a wildcard address echoes from the address it was sent to: in
memory, and with the real twistd in a network namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from tests import udpprobe
from tests.process import BackgroundProcess, venvScript
from twisted_udpsuite.echo.server import UDPEchoProtocol
from twisted_udpsuite.testing import MemoryNetwork


class _Client(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


@pytest.mark.parametrize("interface", ["", "::"])
def test_echoFromTheAddressAsked(interface: str) -> None:
    """Reached at its second address through a router, the echo comes from that address."""
    net = MemoryNetwork()
    serverHost = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    clientHost = net.addHost("203.0.113.5/24")
    serverHost.listenUDP(7, UDPEchoProtocol(serverHost), interface=interface)
    client = _Client()
    port = clientHost.listenUDP(0, client)
    port.write(b"ping", ("198.51.100.1", 7))
    net.advance(0.1)
    assert client.received == [(b"ping", ("198.51.100.1", 7))]


def test_writeFromRefusesForeignAddresses() -> None:
    """As Linux: a source address the host does not have is refused (EINVAL)."""
    net = MemoryNetwork()
    host = net.addHost("192.0.2.1/24")
    port = host.listenUDP(0, _Client())
    with pytest.raises(OSError):
        port.writeFrom(b"x", ("192.0.2.9", 7), "198.51.100.1")


@pytest.mark.parametrize(
    ("interface", "asked", "client"),
    [("", "127.0.0.2", "127.0.0.1"), ("::", "127.0.0.3", "127.0.0.1"), ("::", "fd00::2", "::1")],
)
@pytest_twisted.ensureDeferred
async def test_realWildcardEcho(
    loopbackNamespace: list[str], reactor: Any, interface: str, asked: str, client: str
) -> None:
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "echo"]
    server = BackgroundProcess(reactor, [*argv, "--port", "7007", "--interface", interface])
    try:
        await server.waitFor(b"echo listening|listening on")
        answer = await udpprobe.probe(reactor, loopbackNamespace, asked, 7007, client, b"hello")
        assert answer == (asked.encode(), b"hello")
    finally:
        await server.stop()
