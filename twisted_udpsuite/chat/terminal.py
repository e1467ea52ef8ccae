"""
The chat's terminal side: a L{LineTerminal} (see L{twisted_udpsuite.terminal}
for the line editing and the safe display) whose plain lines are said to the
room or the peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite import ports
from twisted_udpsuite.addresses import parseHostPort
from twisted_udpsuite.chat.peer import ChatPeerProtocol, IChatDisplay
from twisted_udpsuite.chat.wire import isValidNick
from twisted_udpsuite.discovery.protocol import DiscoveredResponder, discover
from twisted_udpsuite.terminal import LineTerminal, printable

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


@implementer(IChatDisplay)
class ChatTerminal(LineTerminal):
    """
    The user's side of a L{ChatPeerProtocol}.

    @param peer: the chat protocol (its C{display} becomes this terminal).
    @param isTerminal: whether the output is a TTY (redraw the prompt).
    @param encoding: of the user's typing and of the output.
    @param discoverOptions: keyword arguments for L{discover} behind C{/lan}
        (tests name the interfaces to probe).
    """

    def __init__(
        self,
        peer: ChatPeerProtocol,
        isTerminal: bool = False,
        encoding: str = "utf-8",
        lineEditing: bool = False,
        discoverOptions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(isTerminal, encoding, lineEditing)
        self.peer = peer
        self.discoverOptions = discoverOptions or {}
        peer.display = self
        self.commands.update(
            {
                "to": self._to,
                "join": self._join,
                "leave": lambda args: self.peer.leave(),
                "who": lambda args: self.peer.who(),
                "nick": self._nick,
                "lan": self._lan,
                "help": lambda args: self._lines(HELP),
            }
        )

    def say(self, text: str) -> None:
        self.peer.say(text)

    def leave(self) -> None:
        self.peer.leave()

    def showMessage(self, stamp: str, sender: str, text: str) -> None:
        self._write(f"{stamp} <{sender}> {text}" if sender != "*" else f"{stamp} * {text}")

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
            if isinstance(failure.value, FirstError):
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
