"""A room on the in-memory network and raw clients that speak to it like nc -u."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol

from twisted_udpsuite.chat.room import MAX_DATAGRAM, ChatRoomProtocol, RoomPolicy
from twisted_udpsuite.chat.wire import Relay, Reply, parseReply
from twisted_udpsuite.testing import MemoryHost, MemoryNetwork

ROOM = ("192.0.2.1", 9999)


class RawClient(DatagramProtocol):
    """Sends what it is told and keeps every datagram it gets, like nc -u."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)

    def send(self, data: bytes, to: tuple[str, int] = ROOM) -> None:
        self.transport.write(data, to)

    def take(self) -> list[bytes]:
        got, self.received = self.received, []
        return got

    def parsed(self) -> list[Relay | Reply]:
        return [parseReply(d) for d in self.take()]

    @property
    def address(self) -> tuple[str, int]:
        return (self.transport.host.interfaces[2].ip.compressed, self.transport.port)


def makeRoom(
    net: MemoryNetwork, policy: RoomPolicy | None = None
) -> tuple[MemoryHost, ChatRoomProtocol]:
    host = net.addHost(ROOM[0] + "/24")
    room = ChatRoomProtocol(host, policy)
    host.listenUDP(ROOM[1], room, maxPacketSize=MAX_DATAGRAM)
    return host, room


def rawClient(net: MemoryNetwork, index: int) -> RawClient:
    host = net.addHost(f"192.0.2.{10 + index}/24")
    client = RawClient()
    host.listenUDP(40000 + index, client)
    return client
