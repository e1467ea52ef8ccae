"""
C{udpsuite ipmsg}: a terminal member of an IP Messenger LAN (IP Messenger,
FeiQ, iptux): the member list, messages, sealed messages, files both ways,
absence.  (The chat's C{udpsuite chat} stays the suite's own protocol; IPMsg
is a command of its own because it has its own port, options and commands.)
"""

from __future__ import annotations

import getpass
import os

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IUDPTransport
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite.command import CommandError, CommandOptions, CommandSpec, Console, stopPort
from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.peer import IPMSG_PORT, MAX_INBOUND, IPMsgPeer
from twisted_udpsuite.ipmsg.service import MemberOptions
from twisted_udpsuite.ipmsg.terminal import IPMsgTerminal
from twisted_udpsuite.optionvalues import checkInterface, checkPort
from twisted_udpsuite.reactors import IReactorNetwork
from twisted_udpsuite.terminal import cbreakMode, connectStdio


class Options(MemberOptions, CommandOptions):
    """Options of C{udpsuite ipmsg}."""

    longdesc = (
        "Join the IP Messenger LAN (IP Messenger, FeiQ, iptux) on UDP and TCP 2425: "
        "type /help for the commands."
    )
    optParameters = [
        ["port", "p", IPMSG_PORT, "UDP port, and TCP port for files.", lambda v: checkPort(v)],
        ["interface", "i", "", "Local address to bind ('' all IPv4).", checkInterface],
        ["nick", "n", None, "Your name in everyone's list (default: your user name)."],
        ["group", "g", "", "Your group, shown next to your name."],
        ["encoding", "e", "auto", "Code page of peers without UTF-8 (auto: UTF-8 or GB18030)."],
        ["download-dir", "d", ".", "Where /get puts files."],
    ]
    optFlags = [["plain", None, "Leave the terminal in line mode (no redraw of typed text)."]]

    def postOptions(self) -> None:
        if self["nick"] is None:
            try:
                self["nick"] = getpass.getuser()
            except Exception:
                self["nick"] = "udpsuite"
        self.checkMember()
        if not os.path.isdir(self["download-dir"]):
            raise usage.UsageError(f"--download-dir: {self['download-dir']!r} is not a directory")


async def runIPMsg(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    offers = FileOffers(reactor)
    peer = IPMsgPeer(
        options["nick"], options["group"], reactor, encoding=options["encoding"],
        hostList=options["host"], offers=offers,
    )  # fmt: skip
    try:
        # A UDP port is its protocol's transport too (Twisted's hint says only IListeningPort).
        udp = IUDPTransport(reactor.listenUDP(options["port"], peer, interface=options["interface"],
                                              maxPacketSize=MAX_INBOUND + 1))  # fmt: skip
    except CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or e.socketError
        raise CommandError(
            f"cannot listen on {e.interface or '*'}:{e.port}: {reason} "
            "(is another IP Messenger running here?)"
        ) from None
    tcp = None
    try:
        # Twisted's hint asks for a ServerFactory; any Factory serves.
        tcp = reactor.listenTCP(udp.getHost().port, FileServerFactory(offers, reactor),  # type: ignore[arg-type]
                                interface=options["interface"])  # fmt: skip
    except CannotListenError:
        peer.offers = None
    restore = cbreakMode(reactor) if console.isTerminal and not options["plain"] else None
    try:
        terminal = IPMsgTerminal(
            peer, isTerminal=console.isTerminal, lineEditing=restore is not None,
            downloads=FilePath(os.path.abspath(options["download-dir"])),
        )  # fmt: skip
        connectStdio(terminal, reactor)
        terminal.showNotice(
            f"on the IP Messenger LAN as {options['nick']!r}, port {udp.getHost().port}"
        )
        if tcp is None:
            terminal.showNotice("the TCP port is taken: you cannot offer files")
        await terminal.done
        if terminal.outputLost:
            console.outputWasClosed()
    finally:
        if restore is not None:
            restore()
        peer.leave()
        if tcp is not None:
            await stopPort(tcp)
        await stopPort(udp)
    return 0


COMMAND = CommandSpec("ipmsg", Options, runIPMsg)
