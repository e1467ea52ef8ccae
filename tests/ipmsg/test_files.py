"""IPMsg attachments: offers, the GETFILEDATA server, fetching with resume, in memory."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.python.filepath import FilePath
from twisted.test import iosim

from tests.helpers import failureResultOf, successResultOf
from tests.ipmsg.helpers import PREFIX, Member, member
from twisted_udpsuite.ipmsg import wire
from twisted_udpsuite.ipmsg.files import (
    FileOffers,
    FileServerFactory,
    TransferFailed,
)
from twisted_udpsuite.ipmsg.wire import Attachment, Mode, Packet
from twisted_udpsuite.paths import isTemporaryName
from twisted_udpsuite.testing import MemoryHost, MemoryNetwork


def connectTCP(
    client: Member | MemoryHost, server: FileServerFactory, serverIP: str, greet: bool = True
) -> iosim.IOPump | None:
    """
    Join the last TCP connection C{client} (a member or its host) asked for to
    C{server} (the in-memory hosts only record TCP), or refuse it if the server
    builds no protocol.
    """
    clientHost = client if isinstance(client, MemoryHost) else client.host
    host, port, factory, _, _ = clientHost.tcpClients.pop()
    assert (host, port) == (serverIP, 2425)
    clientAddress = IPv4Address("TCP", clientHost.addresses[2], 40000)
    serverAddress = IPv4Address("TCP", serverIP, 2425)
    serverProtocol = server.buildProtocol(clientAddress)
    if serverProtocol is None:
        return None
    clientProtocol = factory.buildProtocol(serverAddress)
    return iosim.connect(
        serverProtocol, iosim.FakeTransport(serverProtocol, True, serverAddress, clientAddress),
        clientProtocol, iosim.FakeTransport(clientProtocol, False, clientAddress, serverAddress),
        greet=greet,
    )  # fmt: skip


@pytest.fixture
def lan(tmp_path: Any) -> Any:
    net = MemoryNetwork()
    shared = tmp_path / "shared"
    shared.mkdir()
    alice = member(net, 1, "Alice")
    alice.peer.offers = FileOffers(alice.host, lifetime=600, root=FilePath(str(shared)))
    server = FileServerFactory(alice.peer.offers, alice.host)
    bob = member(net, 2, "Bob")
    net.advance(1.1)
    return net, alice, bob, server, shared, tmp_path / "inbox"


def offer(net: MemoryNetwork, alice: Member, bob: Member, path: Any, text: str = "") -> Any:
    d = alice.peer.offerFiles(bob.address, [FilePath(str(path))], text)
    net.runUntil(d)
    return bob.seen.messages[-1]


def test_offerAndFetch(lan: Any) -> None:
    """
    A file offered in a message is listed in it (name, size) and fetched over
    TCP whole; the server logs and counts it; no part file is left.
    """
    net, alice, bob, server, shared, inbox = lan
    inbox.mkdir()
    (shared / "notes:v1.txt").write_bytes(b"x" * 50_000)
    message = offer(net, alice, bob, shared / "notes:v1.txt", "for you")
    [attachment] = message.attachments
    assert (message.text, attachment.name, attachment.size) == ("for you", "notes:v1.txt", 50_000)
    d = bob.peer.fetchAttachment(message, attachment, FilePath(str(inbox / "notes.txt")))
    connectTCP(bob, server, alice.address[0]).flush()
    result = successResultOf(d)
    assert (result.received, result.resumedFrom) == (50_000, 0)
    assert (inbox / "notes.txt").read_bytes() == b"x" * 50_000
    assert os.listdir(inbox) == ["notes.txt"]
    assert (server.stats.served, server.stats.bytesSent) == (1, 50_000)
    assert net.clock.getDelayedCalls() == []


def test_resume(lan: Any) -> None:
    """
    A download cut short keeps a hidden part file; fetching the same offer
    again asks from that offset and completes the file.
    """
    net, alice, bob, server, shared, inbox = lan
    inbox.mkdir()
    content = bytes(range(256)) * 400
    (shared / "big.bin").write_bytes(content)
    message = offer(net, alice, bob, shared / "big.bin")
    [attachment] = message.attachments
    target = FilePath(str(inbox / "big.bin"))
    d = bob.peer.fetchAttachment(message, attachment, target)
    pump = connectTCP(bob, server, alice.address[0], greet=False)
    pump.pump()
    pump.pump()
    pump.server.transport.loseConnection()  # cut: what it writes from now on is lost
    pump.flush()
    failureResultOf(d, TransferFailed)
    [part] = os.listdir(inbox)
    held = os.path.getsize(inbox / part)
    assert isTemporaryName(part) and 0 < held < len(content)
    d = bob.peer.fetchAttachment(message, attachment, target)
    connectTCP(bob, server, alice.address[0]).flush()
    result = successResultOf(d)
    assert result.resumedFrom == held and result.received == len(content) - held
    assert (inbox / "big.bin").read_bytes() == content
    assert os.listdir(inbox) == ["big.bin"]


def test_onlyOfferedToThatPeer(lan: Any) -> None:
    """
    The server refuses a file that was not offered, one offered to another
    address, and one withdrawn by RELEASEFILES: it closes without a byte.
    """
    net, alice, bob, server, shared, inbox = lan
    (shared / "a.txt").write_bytes(b"secret")
    message = offer(net, alice, bob, shared / "a.txt")
    offers = alice.peer.offers
    assert offers.lookup(bob.address[0], message.packetNo, 0) is not None
    assert offers.lookup(f"{PREFIX}.7", message.packetNo, 0) is None
    assert offers.lookup(bob.address[0], message.packetNo, 1) is None
    assert offers.lookup(bob.address[0], message.packetNo + 1, 0) is None
    release = Packet("1", 99, "bob", "pc-2", Mode.RELEASEFILES, str(message.packetNo))
    bob.host.udpPorts[("", 2425)].write(release.toBytes(), alice.address)
    net.advance(0.1)
    assert offers.lookup(bob.address[0], message.packetNo, 0) is None
    d = bob.peer.fetchAttachment(message, message.attachments[0], FilePath(str(shared / "b")))
    connectTCP(bob, server, alice.address[0]).flush()
    failureResultOf(d, TransferFailed)
    assert server.stats.refused == 1 and not (shared / "b").exists()


def test_offersExpireAndStayConfined(lan: Any, tmp_path: Any) -> None:
    """An offer ends after its lifetime; files outside the root cannot be offered."""
    net, alice, bob, server, shared, inbox = lan
    (shared / "a.txt").write_bytes(b"a")
    (tmp_path / "outside.txt").write_bytes(b"b")
    message = offer(net, alice, bob, shared / "a.txt")
    with pytest.raises(ValueError):
        alice.peer.offerFiles(bob.address, [FilePath(str(tmp_path / "outside.txt"))])
    with pytest.raises(ValueError):
        alice.peer.offerFiles(bob.address, [FilePath(str(shared))])
    net.advance(601)
    assert alice.peer.offers.lookup(bob.address[0], message.packetNo, 0) is None


def test_unacknowledgedOfferWithdrawn(lan: Any) -> None:
    net, alice, bob, server, shared, inbox = lan
    (shared / "a.txt").write_bytes(b"a")
    d = alice.peer.offerFiles((f"{PREFIX}.9", 2425), [FilePath(str(shared / "a.txt"))])
    net.advance(10)
    failureResultOf(d)
    assert len(alice.peer.offers) == 0


def test_senderSendsTooMuch(lan: Any, tmp_path: Any) -> None:
    """
    A sender that sends more than it offered (iptux ignores the resume offset)
    fails the download and leaves no part behind to mix up.
    """
    net, alice, bob, server, shared, inbox = lan
    inbox.mkdir()
    (shared / "a.txt").write_bytes(b"0123456789")
    message = offer(net, alice, bob, shared / "a.txt")
    small = Attachment(0, "a.txt", 4)
    d = bob.peer.fetchAttachment(message, small, FilePath(str(inbox / "a.txt")))
    connectTCP(bob, server, alice.address[0]).flush()
    assert "more than" in str(failureResultOf(d, TransferFailed).value)
    assert os.listdir(inbox) == []


@pytest.mark.parametrize(
    "request_",
    [b"garbage\0", b"1:1:u:h:32:0:0:0\0", b"1:1:u:h:96:zz:0:0\0", b"x" * 9000],
)
def test_badRequests(lan: Any, request_: bytes) -> None:
    """Requests that are not GETFILEDATA, or malformed, are refused without a byte."""
    net, alice, bob, server, shared, inbox = lan
    proto = server.buildProtocol(None)
    transport = iosim.FakeTransport(proto, True, IPv4Address("TCP", PREFIX + ".1", 2425),
                                    IPv4Address("TCP", PREFIX + ".2", 4000))  # fmt: skip
    proto.makeConnection(transport)
    proto.dataReceived(request_)
    net.advance(11)
    assert transport.disconnecting and not transport.getOutBuffer()
    assert server.stats.refused == 1
    proto.connectionLost(None)
    assert net.clock.getDelayedCalls() == []


def test_decimalFileId(lan: Any) -> None:
    """A request naming the file ID in decimal (as in offers) is served too."""
    net, alice, bob, server, shared, inbox = lan
    files = []
    for i in range(11):
        (shared / f"f{i}").write_bytes(b"%d" % i)
        files.append(FilePath(str(shared / f"f{i}")))
    net.runUntil(alice.peer.offerFiles(bob.address, files))
    number = bob.seen.messages[-1].packetNo
    proto = server.buildProtocol(None)
    transport = iosim.FakeTransport(proto, True, IPv4Address("TCP", PREFIX + ".1", 2425),
                                    IPv4Address("TCP", bob.address[0], 4000))  # fmt: skip
    proto.makeConnection(transport)
    body = f"{number:x}:10:0"  # "10" meant as decimal: file f10
    proto.dataReceived(Packet("1", 5, "b", "h", Mode.GETFILEDATA, body).toBytes() + b"\0")
    while transport.producer is not None:
        transport.producer.resumeProducing()
    assert transport.getOutBuffer() == b"10"
    proto.connectionLost(None)


def test_attachmentsListedWire(lan: Any) -> None:
    """The offer on the wire is SENDMSG|FILEATTACHOPT with the list after the body."""
    net, alice, bob, server, shared, inbox = lan
    (shared / "a.txt").write_bytes(b"abc")
    offer(net, alice, bob, shared / "a.txt", "hi")
    sent = next(d for d in net.datagrams if b"a.txt" in d.data)
    packet = wire.decodePacket(sent.data)
    assert packet.has(wire.FILEATTACHOPT) and packet.body == "hi"
    assert packet.extra[0].startswith("0:a.txt:3:")
