"""
C{udpsuite chat [--port P] [--encoding E] [PEER_HOST:PEER_PORT]}: a
full-duplex terminal chat, with plain-text peers or in a chat room.
"""

from __future__ import annotations

import codecs

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IUDPTransport
from twisted.python import usage

from twisted_udpsuite import ports
from twisted_udpsuite.chat.peer import ChatPeerProtocol
from twisted_udpsuite.chat.room import MAX_DATAGRAM
from twisted_udpsuite.chat.terminal import ChatTerminal
from twisted_udpsuite.chat.wire import isValidNick
from twisted_udpsuite.command import (
    CommandError,
    CommandOptions,
    CommandSpec,
    Console,
    resolveHost,
    stopPort,
    targetOption,
)
from twisted_udpsuite.optionvalues import checkInterface, checkPort
from twisted_udpsuite.reactors import IReactorNetwork
from twisted_udpsuite.terminal import cbreakMode, connectStdio


class Options(CommandOptions):
    """Options of C{udpsuite chat}."""

    synopsis = "[PEER_HOST:PEER_PORT]"
    longdesc = "Chat over UDP: type lines to send them; /help lists the commands."
    optParameters = [
        ["port", "p", 0, "Local UDP port (0: any free port).", lambda v: checkPort(v)],
        ["interface", "i", "", "Local address to bind ('' all IPv4, '::' all).", checkInterface],
        ["encoding", "e", "utf-8", "Encoding of plain-text peers (e.g. gbk for legacy scripts)."],
        ["room", "r", None, "Join the chat room at HOST[:PORT] at start (needs --nick)."],
        ["nick", "n", None, "Nick for --room."],
        ["keepalive", None, 20.0, "Seconds between keepalives in a room.", float],
    ]
    optFlags = [["plain", None, "Leave the terminal in line mode (no redraw of typed text)."]]

    def parseArgs(self, peer: str | None = None) -> None:
        self["peer"] = targetOption(peer) if peer is not None else None

    def postOptions(self) -> None:
        try:
            codecs.lookup(self["encoding"])
        except LookupError:
            raise usage.UsageError(f"--encoding: unknown encoding {self['encoding']!r}") from None
        if (self["room"] is None) != (self["nick"] is None):
            raise usage.UsageError("--room and --nick go together")
        if self["nick"] is not None and not isValidNick(self["nick"]):
            raise usage.UsageError("--nick: 1-24 letters, digits, '_', '.', '-'")
        if self["room"] is not None:
            self["room"] = targetOption(self["room"], ports.CHATROOM)
        if self["keepalive"] <= 0:
            raise usage.UsageError("--keepalive: must be positive")


async def runChat(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    peer = ChatPeerProtocol(reactor, encoding=options["encoding"], keepalive=options["keepalive"])
    try:
        # A UDP port is its protocol's transport too (Twisted's hint says only IListeningPort).
        udp = IUDPTransport(
            reactor.listenUDP(
                options["port"], peer, interface=options["interface"], maxPacketSize=MAX_DATAGRAM
            )
        )
    except CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or e.socketError
        raise CommandError(f"cannot listen on {e.interface or '*'}:{e.port}: {reason}") from None
    restore = None
    if console.isTerminal and not options["plain"]:
        restore = cbreakMode(reactor)
    try:
        terminal = ChatTerminal(
            peer, isTerminal=console.isTerminal, lineEditing=restore is not None
        )
        connectStdio(terminal, reactor)
        terminal.showNotice(f"listening on UDP port {udp.getHost().port}")
        if options["peer"] is not None:
            host, port = options["peer"]
            peer.setPeer((await resolveHost(reactor, host), port))
        if options["room"] is not None:
            host, port = options["room"]
            peer.join((await resolveHost(reactor, host), port), options["nick"])
        await terminal.done
        if terminal.outputLost:
            console.outputWasClosed()
    finally:
        if restore is not None:
            restore()
        peer.leave()
        await stopPort(udp)
    return 0


COMMAND = CommandSpec("chat", Options, runChat)
