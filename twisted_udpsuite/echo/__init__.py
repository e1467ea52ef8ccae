"""
RFC 862 echo: UDP and TCP servers that cannot be turned into reflectors, and
a ping-like client.
"""

from twisted_udpsuite.echo.client import PingReply, PingResult, ping
from twisted_udpsuite.echo.server import (
    EchoPolicy,
    EchoStats,
    PeerCounters,
    TCPEchoFactory,
    TCPEchoProtocol,
    UDPEchoProtocol,
)
from twisted_udpsuite.echo.service import EchoService

__all__ = [
    "EchoPolicy",
    "EchoService",
    "EchoStats",
    "PeerCounters",
    "PingReply",
    "PingResult",
    "TCPEchoFactory",
    "TCPEchoProtocol",
    "UDPEchoProtocol",
    "ping",
]
