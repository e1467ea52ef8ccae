"""
The chat's terminal side: a L{LineReceiver} for
L{twisted.internet.stdio.StandardIO}, so typing and receiving share one
thread and one reactor.

Lines starting with C{/} are commands; anything else is said to the room or
the peer.  Incoming messages are written above the line being typed: on a
terminal the current line is erased (C{\\r ESC[K}), the message printed,
and the prompt redrawn; elsewhere (a pipe, a test) they are plain lines.
With C{lineEditing} (the terminal put in cbreak mode by the command) the
terminal echoes keys itself, so the partly typed line is redrawn too.
"""

from __future__ import annotations

import codecs
import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite import ports
from twisted_udpsuite.addresses import parseHostPort
from twisted_udpsuite.chat.peer import ChatPeerProtocol, IChatDisplay
from twisted_udpsuite.chat.wire import isValidNick
from twisted_udpsuite.discovery.protocol import DiscoveredResponder, discover
from twisted_udpsuite.terminal import printable

__all__ = ["ChatTerminal", "HELP"]

HELP = """\
commands:
  /to HOST:PORT          talk plain text to a peer (nc -u, socat, another chat)
  /join HOST:PORT NICK   enter a chat room (port 9999 if omitted)
  /leave                 leave the room
  /who                   who is in the room
  /nick NEW              change your nick in the room
  /lan [PORT] [HOST...]  list udpsuite hosts on the LAN and this one (discovery, port
                         9998); with HOSTs, ask only those, broadcasting nothing
  /help                  this text
  /quit                  leave and exit (Ctrl-D too)
  //text                 say a line that starts with '/'"""


@implementer(IChatDisplay, IHalfCloseableProtocol)
class ChatTerminal(LineReceiver):
    """
    The user's side of a L{ChatPeerProtocol}.

    @param peer: the chat protocol (its C{display} becomes this terminal).
    @param isTerminal: whether the output is a TTY (redraw the prompt).
    @param encoding: of the user's typing and of the output.
    @param discoverOptions: keyword arguments for L{discover} behind C{/lan}
        (tests name the interfaces to probe).
    @ivar done: fires once the user quits (C{/quit}, Ctrl-D, stdin closed) or the
        output is closed.
    @ivar outputLost: whether it ended because its output was closed (C{| head}).
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536
    prompt = "> "

    def __init__(
        self,
        peer: ChatPeerProtocol,
        isTerminal: bool = False,
        encoding: str = "utf-8",
        lineEditing: bool = False,
        discoverOptions: dict[str, Any] | None = None,
    ) -> None:
        self.peer = peer
        self.discoverOptions = discoverOptions or {}
        self.isTerminal = isTerminal
        self.encoding = encoding
        self.lineEditing = lineEditing
        self.typed = ""
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._escape = ""
        self.done: Deferred[None] = Deferred()
        self.outputLost = False
        peer.display = self
        self._commands: dict[str, Callable[[list[str]], None]] = {
            "to": self._to,
            "join": self._join,
            "leave": lambda args: self.peer.leave(),
            "who": lambda args: self.peer.who(),
            "nick": self._nick,
            "lan": self._lan,
            "help": lambda args: self._lines(HELP),
            "quit": lambda args: self._quit(),
        }

    # Output

    def _write(self, text: str) -> None:
        if self.transport is None:
            return
        data = text.encode(self.encoding, "replace")
        if self.isTerminal:
            current = (self.prompt + self.typed).encode(self.encoding, "replace")
            data = b"\r\x1b[K" + data + b"\n" + current
        else:
            data += b"\n"
        self.transport.write(data)

    def _lines(self, text: str) -> None:
        for line in text.splitlines():
            self._write(line)

    def showMessage(self, stamp: str, sender: str, text: str) -> None:
        self._write(f"{stamp} <{sender}> {text}" if sender != "*" else f"{stamp} * {text}")

    def showNotice(self, text: str) -> None:
        self._write(f"-- {text}")

    # Input

    def connectionMade(self) -> None:
        self.showNotice("type /help for commands, /quit to leave")

    def dataReceived(self, data: bytes) -> None:
        if not self.lineEditing:
            super().dataReceived(data)
            return
        for ch in self._decoder.decode(data):
            self._key(ch)

    def _key(self, ch: str) -> None:
        """
        One key in line-editing mode (the terminal in cbreak mode, no echo):
        we echo, so that we always know the partly typed line and can redraw
        it under incoming messages.
        """
        if self._escape:  # skip an escape sequence (arrow keys, ...)
            self._escape += ch
            if len(self._escape) > 1 and (ch.isalpha() or ch == "~") or len(self._escape) > 8:
                self._escape = ""
            return
        if ch in "\r\n":
            line, self.typed = self.typed, ""
            self.transport.write(b"\n")
            self.lineReceived(line.encode(self.encoding, "replace"))
        elif ch in "\x7f\b":
            self.typed = self.typed[:-1]
            self._redraw()
        elif ch == "\x15":  # Ctrl-U
            self.typed = ""
            self._redraw()
        elif ch == "\x17":  # Ctrl-W: the last word
            words = self.typed.rstrip()
            self.typed = words[: words.rfind(" ") + 1]
            self._redraw()
        elif ch == "\x04":  # Ctrl-D
            if not self.typed:
                self.transport.write(b"\n")
                self._quit()
        elif ch == "\x1b":
            self._escape = ch
        elif ch.isprintable() or ch == "\t":
            if len(self.typed.encode(self.encoding, "replace")) >= self.MAX_LENGTH:
                return
            self.typed += ch
            self.transport.write(ch.encode(self.encoding, "replace"))

    def _redraw(self) -> None:
        line = self.prompt + self.typed
        self.transport.write(b"\r\x1b[K" + line.encode(self.encoding, "replace"))

    def lineReceived(self, line: bytes) -> None:
        text = line.decode(self.encoding, "replace").rstrip("\r")
        try:
            if text.startswith("/") and not text.startswith("//"):
                name, *args = text[1:].split() or [""]
                command = self._commands.get(name.lower()) if name else None
                if command is None:
                    self.showNotice(f"unknown command /{name}: try /help")
                else:
                    command(args)
            elif text:
                self.peer.say(text[1:] if text.startswith("//") else text)
        except Exception as e:  # a bad line must never end the chat
            self.showNotice(f"error: {e}")
        if self.isTerminal and self.transport is not None and not self.done.called:
            self._redraw()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.showNotice(f"line too long (at most {self.MAX_LENGTH} bytes); not sent")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._finish()

    def readConnectionLost(self) -> None:
        """Standard input ended (Ctrl-D on a terminal): quit."""
        self._quit()

    def writeConnectionLost(self) -> None:
        """Standard output was closed (its reader went away): nothing more can be shown."""
        self.outputLost = True
        self._quit()

    # Commands

    def _address(self, text: str, defaultPort: int | None, then: Callable[[Any], None]) -> None:
        try:
            host, port = parseHostPort(text, defaultPort)
        except ValueError as e:
            self.showNotice(str(e))
            return
        try:
            ipaddress.ip_address(host)
            then((host, port))
            return
        except ValueError:
            pass
        d = self.peer._reactor.resolve(host)
        d.addCallbacks(
            lambda address: then((address, port)),
            lambda f: self.showNotice(f"cannot resolve {host!r}: {f.getErrorMessage()}"),
        )

    def _to(self, args: list[str]) -> None:
        if len(args) != 1:
            self.showNotice("usage: /to HOST:PORT")
            return
        self._address(args[0], None, self.peer.setPeer)

    def _join(self, args: list[str]) -> None:
        if len(args) != 2 or not isValidNick(args[1]):
            self.showNotice("usage: /join HOST[:PORT] NICK (nick: letters, digits, _ . -)")
            return
        nick = args[1]

        def join(address: Any) -> None:
            self.showNotice(f"joining {args[0]} as {nick}...")
            self.peer.join(address, nick)

        self._address(args[0], ports.CHATROOM, join)

    def _lan(self, args: list[str]) -> None:
        """
        List the suite's responders on the LAN and this host (or only on the hosts
        named, with no broadcast, as C{udpsuite discover --to}), hinting /join for rooms.
        """
        port, hosts = ports.RESPONDER, args
        if args and args[0].isdigit():
            port, hosts = int(args[0]), args[1:]
        if not 0 < port < 65536:
            self.showNotice("usage: /lan [PORT] [HOST...]")
            return
        where = " ".join(hosts) or "the LAN"
        self.showNotice(f"looking for udpsuite hosts on {where} (port {port})...")

        def found(responder: DiscoveredResponder) -> None:
            host = responder.address[0]
            shown = f"[{host}]" if ":" in host else host
            services = ", ".join(str(s) for s in responder.services) or "no services"
            rooms = [s for s in responder.services if s.name == "chatroom"]
            hint = f"  (/join {shown}:{rooms[0].port} NICK)" if rooms else ""
            name = printable(responder.name.encode("utf-8"))
            self.showNotice(f"{name} at {shown}: {services}{hint}")

        def search(addresses: list[str]) -> Deferred[list[DiscoveredResponder]]:
            return discover(self.peer._reactor, port, timeout=2.0, onFound=found,
                            unicastTargets=addresses, broadcast=not addresses,
                            **self.discoverOptions)  # fmt: skip

        def failed(failure: Failure) -> None:
            if failure.check(FirstError):
                failure = failure.value.subFailure
            self.showNotice(f"discovery failed: {failure.getErrorMessage()}")

        reactor = self.peer._reactor
        d = gatherResults([reactor.resolve(h) for h in hosts], consumeErrors=True)
        d.addCallback(search)
        d.addCallbacks(
            lambda everyone: self.showNotice(f"{len(everyone)} found on {where}"), failed
        )

    def _nick(self, args: list[str]) -> None:
        if len(args) != 1 or not isValidNick(args[0]):
            self.showNotice("usage: /nick NEW (letters, digits, _ . -)")
            return
        self.peer.changeNick(args[0])

    def _quit(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.peer.leave()
            self.done.callback(None)
