"""
A chat room bound to a wildcard address talks to each member from the address that member
wrote to: in memory, and with the real twistd in a network namespace.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol

from tests import udpprobe
from tests.process import BackgroundProcess, venvScript
from twisted_udpsuite.chat.room import ChatRoomProtocol
from twisted_udpsuite.testing import MemoryNetwork


class _Member(DatagramProtocol):
    def __init__(self) -> None:
        self.sources: set[str] = set()
        self.lines: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.sources.add(addr[0])
        self.lines.append(datagram)


@pytest.mark.parametrize("interface", ["", "::"])
def test_membersHearTheAddressTheyUse(interface: str) -> None:
    net = MemoryNetwork()
    roomHost = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    near, far = net.addHost("192.0.2.2/24"), net.addHost("203.0.113.5/24")
    roomHost.listenUDP(9999, ChatRoomProtocol(reactor=roomHost), interface=interface)
    alice, bob = _Member(), _Member()
    alicePort, bobPort = near.listenUDP(0, alice), far.listenUDP(0, bob)
    alicePort.write(b"JOIN alice\n", ("192.0.2.1", 9999))
    bobPort.write(b"JOIN bob\n", ("198.51.100.1", 9999))  # through a router
    net.advance(0.1)
    alicePort.write(b"MSG hello bob\n", ("192.0.2.1", 9999))
    net.advance(0.1)
    assert any(b"hello bob" in line for line in bob.lines)
    assert alice.sources == {"192.0.2.1"}
    assert bob.sources == {"198.51.100.1"}


@pytest.mark.parametrize(("interface", "asked"), [("", "127.0.0.2"), ("::", "fd00::2")])
@pytest_twisted.ensureDeferred
async def test_realWildcardRoom(
    loopbackNamespace: list[str], reactor: Any, interface: str, asked: str
) -> None:
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite"]
    argv += ["chatroom", "--port", "9999", "--interface", interface]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"listening")
        client = "::1" if ":" in asked else "127.0.0.1"
        source, reply = await udpprobe.probe(
            reactor, loopbackNamespace, asked, 9999, client, b"JOIN probe\n"
        )
        assert source == asked.encode()
        assert reply.startswith(b"OK JOINED")
    finally:
        await server.stop()
