"""
UDP chat: a room server that relays numbered messages members can recover
after loss, and a full-duplex peer for rooms and plain-text partners.
"""

from twisted_udpsuite.chat.peer import ChatPeerProtocol, IChatDisplay, RecordingDisplay
from twisted_udpsuite.chat.room import (
    MAX_DATAGRAM,
    ChatRoomProtocol,
    IChatRoomObserver,
    Member,
    RoomPolicy,
)
from twisted_udpsuite.chat.service import ChatRoomService
from twisted_udpsuite.chat.terminal import ChatTerminal
from twisted_udpsuite.chat.wire import Command, MalformedMessage, Relay, Reply

__all__ = [
    "MAX_DATAGRAM",
    "ChatPeerProtocol",
    "ChatRoomProtocol",
    "ChatRoomService",
    "ChatTerminal",
    "Command",
    "IChatDisplay",
    "IChatRoomObserver",
    "MalformedMessage",
    "Member",
    "RecordingDisplay",
    "Relay",
    "Reply",
    "RoomPolicy",
]
