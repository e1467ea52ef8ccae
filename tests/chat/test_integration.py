"""
Chat on real sockets on 127.0.0.1: a room with our peers and a raw socat
member, the twistd chatroom with nc -u, and udpsuite chat as a process.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from twisted_udpsuite.chat.peer import ChatPeerProtocol, RecordingDisplay
from twisted_udpsuite.chat.service import ChatRoomService

pytestmark = pytest.mark.integration


class WaitingDisplay(RecordingDisplay):
    """Records, and fires a Deferred when a message with some text shows up."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[str, Deferred[tuple[str, str, str]]]] = []

    def showMessage(self, stamp: str, sender: str, text: str) -> None:
        super().showMessage(stamp, sender, text)
        for wanted, d in list(self.waiting):
            if wanted in text:
                self.waiting.remove((wanted, d))
                d.callback((stamp, sender, text))

    def showNotice(self, text: str) -> None:
        super().showNotice(text)
        self.showMessage("", "--", text)

    def waitFor(self, text: str, reactor: Any) -> Deferred[tuple[str, str, str]]:
        for message in self.messages:
            if text in message[2]:
                d: Deferred[tuple[str, str, str]] = Deferred()
                d.callback(message)
                return d
        d = Deferred()
        self.waiting.append((text, d))
        return d.addTimeout(10, reactor)


@pytest_twisted.async_yield_fixture()
async def roomService(reactor: Any) -> Any:
    service = ChatRoomService(port=0, interface="127.0.0.1", reactor=reactor)
    service.startService()
    yield service
    await service.stopService()


def roomAddress(service: ChatRoomService) -> tuple[str, int]:
    assert service.udpPort is not None
    return ("127.0.0.1", service.udpPort.getHost().port)


@pytest_twisted.ensureDeferred
async def test_roomWithSocatMember(reactor: Any, roomService: ChatRoomService) -> None:
    """Two suite peers and a raw socat member chat in one room, each way."""
    socat = requirePeer("socat")
    room = roomAddress(roomService)
    peers, ports = [], []
    for nick in ("alice", "bob"):
        display = WaitingDisplay()
        peer = ChatPeerProtocol(reactor, display)
        ports.append(reactor.listenUDP(0, peer, interface="127.0.0.1", maxPacketSize=65536))
        peer.join(room, nick)
        await display.waitFor(f"joined the room as {nick}", reactor)
        peers.append((peer, display))
    (alice, aliceShows), (bob, bobShows) = peers
    member = BackgroundProcess(reactor, [socat, "-", f"UDP:{room[0]}:{room[1]}"])
    try:
        member.write(b"JOIN carol\n")
        await member.waitFor(rb"OK JOINED carol \d+ \d+")
        await aliceShows.waitFor("carol joined", reactor)
        alice.say("hello from alice")
        await bobShows.waitFor("hello from alice", reactor)
        await member.waitFor(rb"#\d+ \d\d:\d\d:\d\d <alice> hello from alice")
        member.write(b"hi from socat \x1b[2J\n")
        for shows in (aliceShows, bobShows):
            stamp, sender, text = await shows.waitFor("hi from socat", reactor)
            assert (sender, text) == ("carol", "hi from socat \\x1b[2J")
        member.write(b"WHO\n")
        await member.waitFor(rb"OK WHO alice bob carol")
        member.write(b"LEAVE\n")
        await member.waitFor(rb"OK LEFT")
        await bobShows.waitFor("carol left", reactor)
    finally:
        await member.stop()
    for peer, _ in peers:
        peer.leave()
    for port in ports:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_twistdChatroomWithNetcat(reactor: Any) -> None:
    """twistd runs the chatroom; nc -u joins with a typed command and is logged."""
    nc = requirePeer("nc")
    server = BackgroundProcess(
        reactor,
        [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "chatroom"]
        + ["--port", "0", "--interface", "127.0.0.1"],
    )
    try:
        match = await server.waitFor(rb"chat room listening on 127\.0\.0\.1:(\d+)")
        port = match.group(1).decode()
        out, err, code = await runProcess(
            reactor, [nc, "-u", "-w", "1", "127.0.0.1", port], stdin=b"JOIN dave\n", timeout=20
        )
        assert out.startswith(b"OK JOINED dave 1 1\n#1 "), (out, err)
        assert b"* dave joined" in out
        await server.waitFor(rb"#1 \* dave joined")
    finally:
        await server.stop()


class _Sink(DatagramProtocol):
    def __init__(self, reply: bool = True) -> None:
        self.reply = reply
        self.got: Deferred[tuple[bytes, Any]] = Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not self.got.called:
            if self.reply:
                self.transport.write("收到".encode("gbk"), addr)
            self.got.callback((datagram, addr))


@pytest_twisted.ensureDeferred
async def test_udpsuiteChatProcess(reactor: Any) -> None:
    """udpsuite chat, a real process on real stdio, sends a line in gbk and quits on /quit."""
    sink = _Sink()
    port = reactor.listenUDP(0, sink, interface="127.0.0.1")
    try:
        target = f"127.0.0.1:{port.getHost().port}"
        argv = [sys.executable, "-m", "twisted_udpsuite", "chat", "--encoding", "gbk", target]
        process = BackgroundProcess(reactor, argv)
        try:
            await process.waitFor(rb"talking to 127\.0\.0\.1")
            process.write("你好\n".encode())
            datagram, _ = await sink.got.addTimeout(10, reactor)
            assert datagram == "你好".encode("gbk")
            await process.waitFor("<127.0.0.1:\\d+> 收到".encode())
            process.write(b"/quit\n")
            out, err, code = await process.ended()
            assert code == 0, err
        finally:
            await process.stop()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_udpsuiteChatOnATerminal(reactor: Any) -> None:
    """
    On a pseudo-terminal udpsuite chat edits lines itself: an incoming
    message is printed above the half-typed line, which is redrawn; Ctrl-D quits.
    """
    sink = _Sink(reply=False)
    port = reactor.listenUDP(0, sink, interface="127.0.0.1")
    argv = [sys.executable, "-m", "twisted_udpsuite", "chat", f"127.0.0.1:{port.getHost().port}"]
    process = BackgroundProcess(reactor, argv, usePTY=True)
    try:
        try:
            await process.waitFor(rb"talking to 127\.0\.0\.1:\d+\r\n> ")
        except Exception:
            raise AssertionError(process.output) from None
        process.write("hé".encode())
        process.write(b"llo\r")
        datagram, chat = await sink.got.addTimeout(10, reactor)
        assert datagram == "héllo".encode()
        process.write(b"half typed")
        await process.waitFor(rb"half typed")
        port.write(b"\x1b[2Jincoming", chat)
        await process.waitFor(rb"<127\.0\.0\.1:\d+> \\x1b\[2Jincoming\r\n> half typed")
        assert process.output.count(b"half typed") == 2  # echoed once, redrawn once
        process.write(b"\x15\x04")
        out, err, code = await process.ended()
        assert code == 0
    finally:
        await process.stop()
        await port.stopListening()
