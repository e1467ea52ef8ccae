"""
C{/lan} in the chat: the suite's hosts found by discovery, with a C{/join} hint for each chat
room.  It follows C{udpsuite discover}'s rules: this host's loopback is probed too, and with
HOSTs named, exactly those hosts and no broadcast.
"""

from __future__ import annotations

import random

from twisted.internet.testing import StringTransport

from tests.chat.test_terminal import output, typed
from twisted_udpsuite.chat.peer import ChatPeerProtocol
from twisted_udpsuite.chat.terminal import ChatTerminal
from twisted_udpsuite.discovery.protocol import Responder
from twisted_udpsuite.discovery.wire import ServiceEntry
from twisted_udpsuite.testing import MemoryHost, MemoryNetwork

ROOM = [ServiceEntry("chatroom", "udp", 9999)]


def chatOn(host: MemoryHost) -> tuple[ChatTerminal, StringTransport]:
    """A chat terminal on C{host} (192.0.2.100/24), its greeting already read."""
    peer = ChatPeerProtocol(host)
    host.listenUDP(5000, peer)
    terminal = ChatTerminal(peer, discoverOptions={"interfaces": ["192.0.2.100/24"]})
    transport = StringTransport()
    terminal.makeConnection(transport)
    output(transport)
    return terminal, transport


def test_lanListsHostsWithJoinHints() -> None:
    """/lan lists the suite's responders found by discovery, hinting /join for chat rooms."""
    net = MemoryNetwork(seed=2)
    server = net.addHost("192.0.2.1/24")
    services = [*ROOM, ServiceEntry("echo", "udp", 7007)]
    server.listenUDP(9998, Responder("lab\x1b[2J", services, server, random=random.Random(1)))
    terminal, transport = chatOn(net.addHost("192.0.2.100/24"))
    typed(terminal, "/lan")
    net.advance(5)
    assert output(transport) == [
        "-- looking for udpsuite hosts on the LAN (port 9998)...",
        "-- lab\\x1b[2J at 192.0.2.1: chatroom/udp:9999, echo/udp:7007"
        "  (/join 192.0.2.1:9999 NICK)",
        "-- 1 found on the LAN",
    ]
    typed(terminal, "/lan 70000")
    assert output(transport) == ["-- usage: /lan [PORT] [HOST...]"]
    assert net.clock.getDelayedCalls() == []


def withLocalRoom() -> tuple[MemoryNetwork, ChatTerminal, StringTransport]:
    """A chat on a host whose own room responder is bound to loopback, and a LAN neighbour."""
    net = MemoryNetwork(seed=3)
    host = net.addHost("192.0.2.100/24")
    host.listenUDP(9998, Responder("here", ROOM, host, random=random.Random(0)), "127.0.0.1")
    other = net.addHost("192.0.2.1/24")
    other.listenUDP(9998, Responder("there", (), other, random=random.Random(1)))
    terminal, transport = chatOn(host)
    return net, terminal, transport


def test_lanFindsTheLocalRoom() -> None:
    """/lan finds the room of its own host bound to loopback, and the LAN's hosts."""
    net, terminal, transport = withLocalRoom()
    typed(terminal, "/lan")
    net.advance(5)
    lines = output(transport)
    assert "-- here at 127.0.0.1: chatroom/udp:9999  (/join 127.0.0.1:9999 NICK)" in lines
    assert "-- there at 192.0.2.1: no services" in lines
    assert lines[-1] == "-- 2 found on the LAN"
    assert any(r.broadcast for r in net.datagrams)
    assert net.clock.getDelayedCalls() == []


def test_lanWithHostsAsksOnlyThem() -> None:
    """/lan PORT HOST... probes exactly those hosts (names resolved) and broadcasts nothing."""
    net, terminal, transport = withLocalRoom()
    typed(terminal, "/lan 9998 localhost")
    net.advance(5)
    assert output(transport) == [
        "-- looking for udpsuite hosts on localhost (port 9998)...",
        "-- here at 127.0.0.1: chatroom/udp:9999  (/join 127.0.0.1:9999 NICK)",
        "-- 1 found on localhost",
    ]
    assert not any(r.broadcast for r in net.datagrams)
    typed(terminal, "/lan no.such.host.invalid")
    net.advance(5)
    assert output(transport)[-1].startswith("-- discovery failed: ")
    assert not any(r.broadcast for r in net.datagrams)
    assert net.clock.getDelayedCalls() == []
