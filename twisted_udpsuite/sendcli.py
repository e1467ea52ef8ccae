"""
C{udpsuite send HOST:PORT MESSAGE [--wait S]}: send one datagram and show
the replies, for poking any UDP service (echo, the chat room, a responder).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.python import usage

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.command import (
    CommandError,
    CommandOptions,
    CommandSpec,
    Console,
    resolveHost,
    targetOption,
)
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

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        source = (hostOf(addr[0]), addr[1])
        if source != self.peer and not self.options["any-source"]:
            return
        self.replies += 1
        shown = f"[{source[0]}]:{source[1]}" if ":" in source[0] else f"{source[0]}:{source[1]}"
        self.console.say(f"{shown}: {printable(data, self.options['encoding'])}")


async def runSend(reactor: Any, options: Options, console: Console) -> int:
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    listener = _Listener(options, (hostOf(address), port), console)
    udp = reactor.listenUDP(
        0, listener, interface="::" if ":" in address else "", maxPacketSize=65536
    )
    try:
        try:
            udp.write(options["payload"], (address, port))
        except Exception as e:
            raise CommandError(f"cannot send to {host}:{port}: {e}") from None
        if options["wait"]:
            waited: Deferred[None] = Deferred()
            reactor.callLater(options["wait"], waited.callback, None)
            await waited
    finally:
        await udp.stopListening()
    return 0


COMMAND = CommandSpec("send", "Send one datagram; --wait S prints replies", Options, runSend)
