"""
IP Messenger (IPMsg): the LAN messenger protocol of IP Messenger, FeiQ and iptux.

L{wire} is the codec; L{peer} the UDP member of the LAN (presence, the peer
table, messages); L{files} the TCP attachment transfers; L{service} the
C{twistd -n udpsuite ipmsg} service and L{cli} the C{udpsuite ipmsg} terminal.
"""

from twisted_udpsuite.ipmsg.files import FetchResult, FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.peer import (
    IPMSG_PORT,
    IIPMsgObserver,
    IPMsgPeer,
    Message,
    MessageTooLong,
    NotAcknowledged,
    PeerInfo,
    RecordingObserver,
)

__all__ = [
    "IPMSG_PORT",
    "FetchResult",
    "FileOffers",
    "FileServerFactory",
    "IIPMsgObserver",
    "IPMsgPeer",
    "Message",
    "MessageTooLong",
    "NotAcknowledged",
    "PeerInfo",
    "RecordingObserver",
]
