"""
Local addresses of received datagrams: the packet-info parser, the port that reads it, and
the in-memory network's model of it.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import udp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from twisted_udpsuite.localaddress import (
    IP_PKTINFO,
    ILocalAddressReceiver,
    LocalAddressPort,
    adoptDatagramPort,
    listenUDP,
    localAddressFrom,
)
from twisted_udpsuite.testing import MemoryNetwork, MemoryUDPPort


def _inPktinfo(specDst: str, headerDst: str, index: int = 2) -> tuple[int, int, bytes]:
    data = struct.pack("@i", index) + socket.inet_aton(specDst) + socket.inet_aton(headerDst)
    return (socket.IPPROTO_IP, IP_PKTINFO, data)


def _in6Pktinfo(address: str, index: int = 3) -> tuple[int, int, bytes]:
    data = socket.inet_pton(socket.AF_INET6, address) + struct.pack("@I", index)
    return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data)


@pytest.mark.parametrize(
    ("ancillary", "family", "expected"),
    [
        # IPv4: the local address the kernel answers from, even for a broadcast request.
        ([_inPktinfo("192.0.2.7", "255.255.255.255")], socket.AF_INET, "192.0.2.7"),
        ([_inPktinfo("127.0.0.2", "127.0.0.2")], socket.AF_INET, "127.0.0.2"),
        ([_inPktinfo("192.0.2.7", "192.0.2.7")], socket.AF_INET6, "::ffff:192.0.2.7"),
        ([_in6Pktinfo("2001:db8::5")], socket.AF_INET6, "2001:db8::5"),
        ([_in6Pktinfo("fe80::1", index=4)], socket.AF_INET6, "fe80::1%4"),
        ([_in6Pktinfo("ff02::1")], socket.AF_INET6, None),
        # IPv4 on a dual-stack socket: spec_dst wins over the header's (broadcast) address.
        (
            [_in6Pktinfo("::ffff:192.0.2.255"), _inPktinfo("192.0.2.7", "192.0.2.255")],
            socket.AF_INET6,
            "::ffff:192.0.2.7",
        ),
        ([_in6Pktinfo("::ffff:192.0.2.255")], socket.AF_INET6, None),
        ([], socket.AF_INET, None),
        ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"\0" * 4)], socket.AF_INET, None),
        ([(socket.IPPROTO_IP, IP_PKTINFO, b"short")], socket.AF_INET, None),
    ],
)
def test_localAddressFrom(ancillary: list[Any], family: int, expected: str | None) -> None:
    assert localAddressFrom(ancillary, family) == expected


@implementer(ILocalAddressReceiver)
class _Receiver(DatagramProtocol):
    def __init__(self) -> None:
        self.got: Deferred[tuple[bytes, Any, str | None]] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        raise AssertionError("datagramReceivedAt should have been called")

    def datagramReceivedAt(self, datagram: bytes, addr: Any, local: str | None) -> None:
        if not self.got.called:
            self.got.callback((datagram, addr, local))


class _Plain(DatagramProtocol):
    def __init__(self) -> None:
        self.got: Deferred[tuple[bytes, Any]] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self.got.called:
            self.got.callback((datagram, addr))


def test_listenUDPLeavesOtherReactorsAlone() -> None:
    """In memory, or on one address, it is the reactor's own listenUDP."""
    host = MemoryNetwork().addHost("192.0.2.1/24")
    assert isinstance(listenUDP(host, 0, _Plain()), MemoryUDPPort)


@pytest_twisted.ensureDeferred
async def test_listenUDPOnOneAddress(reactor: Any) -> None:
    port = listenUDP(reactor, 0, _Plain(), "127.0.0.1")
    try:
        assert type(port) is udp.Port
    finally:
        await port.stopListening()


async def _sendThroughPort(reactor: Any, protocol: Any, payload: bytes) -> tuple[Any, int]:
    """Send C{payload} from 127.0.0.1 to a L{LocalAddressPort} running C{protocol}."""
    port = LocalAddressPort(0, protocol, "127.0.0.1", 8192, reactor)
    port.startListening()
    sender = reactor.listenUDP(0, _Plain(), interface="127.0.0.1")
    try:
        sender.write(payload, ("127.0.0.1", port.getHost().port))
        return await protocol.got.addTimeout(10, reactor), sender.getHost().port
    finally:
        await port.stopListening()
        await sender.stopListening()


@pytest_twisted.ensureDeferred
async def test_portTellsTheLocalAddress(reactor: Any) -> None:
    """A real socket on 127.0.0.1: the receiver hears where the datagram went."""
    got, source = await _sendThroughPort(reactor, _Receiver(), b"hello")
    assert got == (b"hello", ("127.0.0.1", source), "127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_portFeedsPlainProtocols(reactor: Any) -> None:
    """A protocol that does not ask for local addresses gets plain datagramReceived."""
    got, source = await _sendThroughPort(reactor, _Plain(), b"hi")
    assert got == (b"hi", ("127.0.0.1", source))


# The in-memory network tells receivers what Linux's packet info would.


def _deliver(net: MemoryNetwork, host: Any, interface: str, sendTo: str, sender: Any) -> Any:
    receiver = _Receiver()
    port = host.listenUDP(5000, receiver, interface=interface)
    client = sender.listenUDP(0, _Plain())
    client.setBroadcastAllowed(True)
    client.write(b"x", (sendTo, 5000))
    _, _, local = net.runUntil(receiver.got)
    port.stopListening()
    return local


def test_memoryUnicastLocal() -> None:
    net = MemoryNetwork()
    server = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    client = net.addHost("192.0.2.2/24")
    assert _deliver(net, server, "", "198.51.100.1", client) == "198.51.100.1"
    assert _deliver(net, server, "", "192.0.2.1", client) == "192.0.2.1"
    assert _deliver(net, server, "::", "192.0.2.1", client) == "::ffff:192.0.2.1"


def test_memoryBroadcastLocal() -> None:
    """A broadcast's local address is the receiver's address on the sender's link."""
    net = MemoryNetwork()
    server = net.addHost("198.51.100.1/24", "192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    assert _deliver(net, server, "", "192.0.2.255", client) == "192.0.2.1"


def test_memoryV4MappedBind() -> None:
    """As on Linux, an IPv6 socket may bind a V4-mapped address and talks IPv4 from it."""
    net = MemoryNetwork()
    server = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    client = net.addHost("192.0.2.2/24")
    receiver = _Plain()
    client.listenUDP(7000, receiver)
    port = server.listenUDP(0, _Plain(), interface="::ffff:198.51.100.1")
    port.write(b"from mapped", ("::ffff:192.0.2.2", 7000))
    datagram, addr = net.runUntil(receiver.got)
    assert (datagram, addr) == (b"from mapped", ("198.51.100.1", port.getHost().port))


@pytest_twisted.ensureDeferred
async def test_writeFromAnAddressNotOurs(reactor: Any) -> None:
    """An address the kernel refuses to send from: sent from the kernel's own choice."""
    receiver = _Plain()
    listening = reactor.listenUDP(0, receiver, interface="127.0.0.1")
    port = LocalAddressPort(0, _Plain(), "127.0.0.1", 8192, reactor)
    port.startListening()
    try:
        port.writeFrom(b"anyway", ("127.0.0.1", listening.getHost().port), "192.0.2.77")
        got = await receiver.got.addTimeout(10, reactor)
        assert got == (b"anyway", ("127.0.0.1", port.getHost().port))
    finally:
        await port.stopListening()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_adoptedSocketTellsTheLocalAddress(reactor: Any) -> None:
    """A socket bound elsewhere (a TFTP worker's) and adopted reports local addresses too."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    receiver = _Receiver()
    port = adoptDatagramPort(reactor, sock.fileno(), socket.AF_INET, receiver)
    sock.close()  # the port holds its own duplicate
    sender = reactor.listenUDP(0, _Plain(), interface="127.0.0.1")
    try:
        assert isinstance(port, LocalAddressPort)
        sender.write(b"adopted", ("127.0.0.1", port.getHost().port))
        got = await receiver.got.addTimeout(10, reactor)
        assert got == (b"adopted", ("127.0.0.1", sender.getHost().port), "127.0.0.1")
    finally:
        await port.stopListening()
        await sender.stopListening()
