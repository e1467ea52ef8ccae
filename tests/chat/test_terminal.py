"""The terminal UI driven through a StringTransport in place of stdio."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from tests.chat.helpers import ROOM, makeRoom, rawClient
from tests.helpers import successResultOf
from twisted_udpsuite.chat.peer import ChatPeerProtocol
from twisted_udpsuite.chat.terminal import ChatTerminal
from twisted_udpsuite.testing import MemoryNetwork


def setUp(
    net: MemoryNetwork, isTerminal: bool = False, index: int = 0
) -> tuple[ChatTerminal, StringTransport, ChatPeerProtocol]:
    host = net.addHost(f"192.0.2.{100 + index}/24")
    peer = ChatPeerProtocol(host)
    host.listenUDP(5000, peer)
    terminal = ChatTerminal(peer, isTerminal=isTerminal)
    transport = StringTransport()
    terminal.makeConnection(transport)
    return terminal, transport, peer


def typed(terminal: ChatTerminal, *lines: str) -> None:
    for line in lines:
        terminal.dataReceived(line.encode() + b"\n")


def output(transport: StringTransport) -> list[str]:
    text = transport.value().decode()
    transport.clear()
    return text.splitlines()


def test_roomSession() -> None:
    """/join, chat, /who, /nick, /leave, /quit through the terminal."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net)
    alice, aliceOut, _ = setUp(net, index=0)
    bob, bobOut, _ = setUp(net, index=1)
    typed(alice, f"/join {ROOM[0]}:{ROOM[1]} alice")
    typed(bob, f"/join {ROOM[0]} bob")  # the port defaults to 9999
    net.advance(1)
    for line in ["hello bob", "//slash at the start", "/who", "/nick alicia"]:
        typed(alice, line)
        net.advance(1)
    assert output(bobOut)[-4:] == [
        "00:00:00 * bob joined",
        "00:00:01 <alice> hello bob",
        "00:00:02 <alice> /slash at the start",
        "00:00:04 * alice is now alicia",
    ]
    assert "-- in the room: alice, bob" in output(aliceOut)
    typed(bob, "/leave")
    net.advance(1)
    assert output(bobOut)[-1] == "-- left the room at 192.0.2.1:9999"
    typed(alice, "/quit")
    assert aliceOut.disconnecting
    assert successResultOf(alice.done) is None
    net.advance(1)
    assert room.members == {}
    assert net.clock.getDelayedCalls() == []


def test_directWithRawPeerAndEscapes() -> None:
    """/to a raw peer; its escape sequences arrive neutralised."""
    net = MemoryNetwork(seed=1)
    terminal, out, _ = setUp(net)
    nc = rawClient(net, 0)
    output(out)
    typed(terminal, f"/to {nc.address[0]}:{nc.address[1]}", "hi there")
    net.pump()
    assert nc.take() == [b"hi there"]
    nc.send(b"\x1b[2J\x1b[H gotcha \x9b\n", ("192.0.2.100", 5000))
    net.pump()
    lines = output(out)
    assert lines == [
        "-- talking to 192.0.2.10:40000",
        "00:00:00 <192.0.2.10:40000> \\x1b[2J\\x1b[H gotcha \\x9b\\n",
    ]


def test_promptRedrawOnATerminal() -> None:
    """On a TTY each message erases the line, prints, and redraws the prompt."""
    net = MemoryNetwork(seed=1)
    terminal, out, _ = setUp(net, isTerminal=True)
    out.clear()
    terminal.showMessage("12:00:00", "bob", "hi")
    assert out.value() == b"\r\x1b[K12:00:00 <bob> hi\n> "
    out.clear()
    typed(terminal, "")
    assert out.value() == b"\r\x1b[K> "


def test_lineEditingRedrawsThePartlyTypedLine() -> None:
    """
    In line-editing mode (cbreak) the terminal echoes keys itself, so an
    incoming message is printed above the half-typed line, which is redrawn.
    """
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.100/24")
    peer = ChatPeerProtocol(host)
    host.listenUDP(5000, peer)
    nc = rawClient(net, 0)
    peer.setPeer(nc.address)
    terminal = ChatTerminal(peer, isTerminal=True, lineEditing=True)
    out = StringTransport()
    terminal.makeConnection(out)
    out.clear()
    terminal.dataReceived("héllo wor".encode()[:2])  # a character split across reads
    terminal.dataReceived("héllo wor".encode()[2:])
    assert out.value() == "héllo wor".encode()
    out.clear()
    terminal.showMessage("12:00:00", "bob", "hi")
    assert out.value() == "\r\x1b[K12:00:00 <bob> hi\n> héllo wor".encode()
    out.clear()
    terminal.dataReceived(b"\x7f\x1b[Dld\r")  # backspace, an arrow key (ignored), Enter
    net.pump()
    assert nc.take() == ["héllo wold".encode()]
    assert out.value().endswith(b"\r\x1b[K> ")
    terminal.dataReceived(b"one two\x17three\x15again\x04")  # Ctrl-W, Ctrl-U; Ctrl-D ignored
    assert terminal.typed == "again" and not terminal.done.called
    terminal.dataReceived(b"\x15\x04")  # Ctrl-D on an empty line quits
    assert successResultOf(terminal.done) is None


def test_badCommandsAndInput() -> None:
    """Unknown commands, bad arguments, long lines and undecodable input only explain."""
    net = MemoryNetwork(seed=1)
    terminal, out, _ = setUp(net)
    output(out)
    typed(
        terminal,
        "/frobnicate",
        "/",
        "/to",
        "/to nowhere",
        "/to no.such.host:5",
        "/join 192.0.2.1:9999",
        "/join 192.0.2.1:9999 bad*nick",
        "/nick",
        "/who",
        "text before any peer",
    )
    terminal.dataReceived(b"\xff\xfe\r\n")
    terminal.dataReceived(b"x" * 70000 + b"\n")
    lines = output(out)
    assert lines[:2] == [
        "-- unknown command /frobnicate: try /help",
        "-- unknown command /: try /help",
    ]
    assert "-- usage: /to HOST:PORT" in lines
    assert "-- 'nowhere': no port (use HOST:PORT)" in lines
    assert any(line.startswith("-- cannot resolve 'no.such.host'") for line in lines)
    assert lines.count("-- usage: /join HOST[:PORT] NICK (nick: letters, digits, _ . -)") == 2
    assert "-- usage: /nick NEW (letters, digits, _ . -)" in lines
    assert "-- not in a room: /join HOST:PORT NICK" in lines
    assert any(line.startswith("-- nobody to talk to") for line in lines)
    assert any(line.startswith("-- line too long") for line in lines)
    typed(terminal, "/help")
    assert "  /quit                  leave and exit (Ctrl-D too)" in output(out)


def test_ctrlDLeavesTheRoom() -> None:
    """End of input (Ctrl-D) leaves the room and finishes."""
    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net)
    terminal, out, _ = setUp(net)
    typed(terminal, "/join 192.0.2.1 alice")
    net.advance(1)
    assert len(room.members) == 1
    terminal.connectionLost(None)
    net.advance(1)
    assert successResultOf(terminal.done) is None
    assert room.members == {}
    assert net.clock.getDelayedCalls() == []


def test_resolveLocalhost() -> None:
    """/to accepts a name the reactor resolves."""
    net = MemoryNetwork(seed=1)
    terminal, out, peer = setUp(net)
    typed(terminal, "/to localhost:7")
    assert peer.peer == ("127.0.0.1", 7)
