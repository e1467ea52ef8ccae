"""
LAN discovery over UDP broadcast (and IPv6 multicast): responders that
answer probes without reply storms, a discoverer that finds them, and
presence (announce, goodbye, a table of peers that expire).
"""

from twisted_udpsuite.discovery.protocol import (
    MAX_DATAGRAM,
    DiscoveredResponder,
    Discoverer,
    Peer,
    PeerTable,
    Responder,
    ResponderStats,
    discover,
    newInstance,
)
from twisted_udpsuite.discovery.service import ResponderService
from twisted_udpsuite.discovery.wire import MalformedMessage, ServiceEntry

__all__ = [
    "MAX_DATAGRAM",
    "DiscoveredResponder",
    "Discoverer",
    "MalformedMessage",
    "Peer",
    "PeerTable",
    "Responder",
    "ResponderService",
    "ResponderStats",
    "ServiceEntry",
    "discover",
    "newInstance",
]
