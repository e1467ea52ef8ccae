"""
The chat room service for C{twistd -n udpsuite chatroom}, and its options.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IUDPTransport
from twisted.logger import Logger

from twisted_udpsuite import ports
from twisted_udpsuite.chat.room import MAX_DATAGRAM, ChatRoomProtocol, RoomPolicy
from twisted_udpsuite.localaddress import listenUDP
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import ServiceOptions, ServiceSpec, numberOption

__all__ = ["ChatRoomService", "Options", "makeService", "SPEC"]


class ChatRoomService(Service):
    """
    A L{ChatRoomProtocol} on one UDP port.  L{startService} raises
    L{twisted.internet.error.CannotListenError} if the port cannot be bound.

    @ivar room: the protocol (add observers to it).
    @ivar udpPort: the bound port, once started.
    """

    log = Logger(namespace="twisted_udpsuite.chat")

    def __init__(
        self,
        port: int = ports.CHATROOM,
        interface: str = "",
        policy: RoomPolicy | None = None,
        reactor: Any = None,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.room = ChatRoomProtocol(self._reactor, policy)
        self.udpPort: IUDPTransport | None = None

    def startService(self) -> None:
        self.udpPort = listenUDP(self._reactor, self.port, self.room, self.interface, MAX_DATAGRAM)
        super().startService()
        self.log.info(
            "chat room listening on {interface}:{port}",
            interface=self.interface or "*",
            port=self.udpPort.getHost().port,
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.udpPort = self.udpPort, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


_DEFAULT = RoomPolicy()


class Options(ServiceOptions):
    """C{twistd -n udpsuite chatroom}: a UDP chat room."""

    defaultPort = ports.CHATROOM
    optParameters = [
        [
            "max-members",
            None,
            _DEFAULT.maxMembers,
            "Members at once.",
            numberOption("max-members", int, low=1),
        ],
        [
            "max-message",
            None,
            _DEFAULT.maxMessage,
            "Largest datagram accepted, in bytes.",
            numberOption("max-message", int, low=64),
        ],
        [
            "history",
            None,
            _DEFAULT.history,
            "Lines kept for RESEND.",
            numberOption("history", int, low=1),
        ],
        [
            "backlog",
            None,
            _DEFAULT.backlog,
            "Lines a new member gets.",
            numberOption("backlog", int, low=0),
        ],
        [
            "idle-timeout",
            None,
            _DEFAULT.idleTimeout,
            "Seconds of silence before a member is dropped.",
            numberOption("idle-timeout", float, low=1),
        ],
        [
            "rate",
            None,
            _DEFAULT.rate,
            "Datagrams per second per member.",
            numberOption("rate", float, low=0.1),
        ],
        [
            "burst",
            None,
            _DEFAULT.burst,
            "Datagrams a member may send at once.",
            numberOption("burst", float, low=1),
        ],
    ]

    def policy(self) -> RoomPolicy:
        return RoomPolicy(
            maxMembers=self["max-members"],
            maxMessage=self["max-message"],
            history=self["history"],
            backlog=min(self["backlog"], self["history"]),
            idleTimeout=self["idle-timeout"],
            rate=self["rate"],
            burst=self["burst"],
        )


def makeService(options: Options, reactor: Any = None) -> ChatRoomService:
    """Build the chat room service from parsed L{Options}."""
    return ChatRoomService(
        port=options["port"],
        interface=options["interface"],
        policy=options.policy(),
        reactor=reactor,
    )


SPEC = ServiceSpec("chatroom", "UDP chat room (relays members' messages)", Options, makeService)
