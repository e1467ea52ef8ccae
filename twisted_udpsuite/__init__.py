"""
twisted_udpsuite: small-network protocols on Twisted.

Each protocol lives in its own subpackage (wire format, session logic and
Twisted glue kept apart); L{twisted_udpsuite.testing} is an in-memory datagram
network for testing any C{DatagramProtocol} without sockets.
"""

__version__ = "0.1.0"
