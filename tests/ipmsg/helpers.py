"""A small IPMsg LAN on the in-memory network, and a raw socket to speak to it by hand."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from twisted_udpsuite.ipmsg.peer import MAX_INBOUND, IPMsgPeer, RecordingObserver
from twisted_udpsuite.ipmsg.wire import Packet, decodePacket
from twisted_udpsuite.testing import MemoryHost, MemoryNetwork

PREFIX = "192.0.2"
BROADCASTS = frozenset({f"{PREFIX}.255", f"{PREFIX}.0"})


class RawSocket(DatagramProtocol):
    """Sends bytes as given and keeps what comes back, decoded."""

    def __init__(self) -> None:
        self.received: list[tuple[Packet, Any]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((decodePacket(data), addr))

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.transport.write(data, to)


@dataclass
class Member:
    host: MemoryHost
    peer: IPMsgPeer
    seen: RecordingObserver = field(default_factory=RecordingObserver)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host.addresses[2], 2425)


def member(net: MemoryNetwork, number: int, nick: str, start: bool = True, **kwargs: Any) -> Member:
    """A peer called C{nick} at 192.0.2.C{number}, listening on 2425 once started."""
    host = net.addHost(f"{PREFIX}.{number}/24")
    options: dict[str, Any] = {
        "user": nick.lower(),
        "host": f"pc-{number}",
        "broadcastTargets": [f"{PREFIX}.255"],
        "random": random.Random(number),
        "broadcasts": BROADCASTS,
    }
    options.update(kwargs)
    peer = IPMsgPeer(nick, "lab", reactor=host, **options)
    result = Member(host, peer)
    peer.addObserver(result.seen)
    if start:
        host.listenUDP(2425, peer, interface="", maxPacketSize=MAX_INBOUND + 1)
    return result


def raw(net: MemoryNetwork, number: int, port: int = 2425) -> RawSocket:
    """A bare socket at 192.0.2.C{number}."""
    host = net.addHost(f"{PREFIX}.{number}/24")
    sock = RawSocket()
    host.listenUDP(port, sock, interface="")
    return sock


def stop(*members: Member) -> None:
    for m in members:
        if m.peer.transport is not None:
            m.peer.transport.stopListening()
