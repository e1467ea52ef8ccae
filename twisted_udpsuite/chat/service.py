"""
The chat room service for C{twistd -n udpsuite chatroom}, and its options.
"""

from __future__ import annotations

from twisted.internet.interfaces import IUDPTransport

from twisted_udpsuite import ports
from twisted_udpsuite.chat.room import MAX_DATAGRAM, ChatRoomProtocol, RoomPolicy
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    Offer,
    ServiceOptions,
    ServiceSpec,
    numberOption,
)

__all__ = ["ChatRoomService", "Options", "makeService", "SPEC"]


class ChatRoomService(ListeningService):
    """
    A L{ChatRoomProtocol} on one UDP port.  Starting raises
    L{twisted.internet.error.CannotListenError} if the port cannot be bound.

    @ivar room: the protocol (add observers to it).
    """

    def __init__(
        self,
        port: int = ports.CHATROOM,
        interface: str = "",
        policy: RoomPolicy | None = None,
        reactor: IReactorNetwork | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.room = ChatRoomProtocol(reactor, policy)
        super().__init__(
            [
                Listener(
                    "chatroom", "udp", port, self.room, interface, MAX_DATAGRAM, label="chat room"
                )
            ],
            reactor,
        )

    @property
    def udpPort(self) -> IUDPTransport | None:
        """The bound port, once started."""
        port: IUDPTransport | None = self.portOf(0)
        return port


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


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> ChatRoomService:
    """Build the chat room service from parsed L{Options}."""
    return ChatRoomService(
        port=options["port"],
        interface=options["interface"],
        policy=options.policy(),
        reactor=reactor,
    )


SPEC = ServiceSpec(
    "chatroom",
    "UDP chat room (relays members' messages)",
    Options,
    makeService,
    offers=(Offer("chatroom", "udp"),),
)
