"""
C{udpsuite send HOST:PORT MESSAGE [--wait S]}: send one datagram and show
the replies, for poking any UDP service (echo, the chat room, a responder).
"""

from __future__ import annotations

import errno
import socket

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.python import usage

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.command import (
    CommandError,
    CommandOptions,
    CommandSpec,
    Console,
    resolveHost,
    showAddress,
    stopPort,
    targetOption,
)
from twisted_udpsuite.reactors import IReactorNetwork
from twisted_udpsuite.terminal import printable


class Options(CommandOptions):
    """Options of C{udpsuite send}."""

    synopsis = "HOST:PORT MESSAGE"
    optParameters = [
        ["wait", "w", 0.0, "Seconds to print replies for after sending (0: none).", float],
        ["encoding", "e", "utf-8", "Encoding of MESSAGE and of the replies shown."],
    ]
    optFlags = [["any-source", None, "Show datagrams from any address, not only HOST:PORT."]]

    def parseArgs(self, target: str | None = None, *message: str) -> None:
        if target is None or not message:
            raise usage.UsageError("send: needs HOST:PORT and a MESSAGE")
        self["target"] = targetOption(target)
        self["message"] = " ".join(message)

    def postOptions(self) -> None:
        if self["wait"] < 0:
            raise usage.UsageError("--wait: must not be negative")
        try:
            self["payload"] = self["message"].encode(self["encoding"])
        except LookupError:
            raise usage.UsageError(f"--encoding: unknown encoding {self['encoding']!r}") from None
        except UnicodeEncodeError as e:
            raise usage.UsageError(
                f"MESSAGE cannot be encoded as {self['encoding']}: {e}"
            ) from None


class _Listener(DatagramProtocol):
    def __init__(self, options: Options, peer: tuple[str, int], console: Console) -> None:
        self.options = options
        self.peer = peer
        self.console = console
        self.replies = 0
        #: Fires with True when ICMP port unreachable comes back (on a connected socket).
        self.ended: Deferred[bool] = Deferred()

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        source = (hostOf(addr[0]), addr[1])
        if source != self.peer and not self.options["any-source"]:
            return
        self.replies += 1
        self.console.say(f"{showAddress(*source)}: {printable(data, self.options['encoding'])}")

    def connectionRefused(self) -> None:
        if not self.ended.called:
            self.ended.callback(True)

    def startProtocol(self) -> None:
        self._port = self.transport

    def stopProtocol(self) -> None:
        # Twisted's epoll and poll reactors take the socket's error event for a closed
        # descriptor and stop the port without calling connectionRefused(): the error
        # is still there to read, until the port closes the socket after this call.
        sock = getattr(self._port, "socket", None)  # None once closed, or not a real port
        if sock is None:
            return
        try:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            return
        if error == errno.ECONNREFUSED:
            self.connectionRefused()


async def runSend(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    """
    Send the datagram; with C{--wait}, print the replies until the time is up.  The
    socket is connected to HOST:PORT (unless C{--any-source}), so that an ICMP port
    unreachable comes back as "connection refused", exit status 1.
    """
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    listener = _Listener(options, (hostOf(address), port), console)
    # A UDP port is its protocol's transport too (Twisted's hint says only IListeningPort).
    udp = IUDPTransport(
        reactor.listenUDP(
            0, listener, interface="::" if ":" in address else "", maxPacketSize=65536
        )
    )
    try:
        try:
            if options["any-source"]:
                udp.write(options["payload"], (address, port))
            else:
                udp.connect(address, port)
                udp.write(options["payload"])  # type: ignore[call-arg]  # connected: no address
        except Exception as e:
            raise CommandError(f"cannot send to {host}:{port}: {e}") from None
        if options["wait"]:
            timer = reactor.callLater(options["wait"], listener.ended.callback, False)
            try:
                refused = await listener.ended
            finally:
                if timer.active():
                    timer.cancel()
            if refused:
                raise CommandError(f"{host}:{port}: connection refused (nothing listening)")
    finally:
        await stopPort(udp)
    return 0


COMMAND = CommandSpec("send", Options, runSend)
