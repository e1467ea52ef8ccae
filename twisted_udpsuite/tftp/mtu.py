# -*- test-case-name: tests.tftp.test_pxe_deploy -*-
"""
The MTU a transfer's DATA packets must fit (C{--fit-mtu}).

A request arrives at one of the host's addresses (the packet info of
L{twisted_udpsuite.localaddress} says which); the answers go back from that address, out of
the interface the kernel routes the client through: on a LAN, the one the request came
in on. L{routeMTU} asks the kernel for that route's MTU, the way a connected UDP socket
sees it (C{IP_MTU}): the interface's MTU, or a smaller path MTU the kernel has learnt.
Nothing is sent: connecting a UDP socket only looks the route up.
"""

from __future__ import annotations

import socket

from twisted_udpsuite.addresses import hostOf

__all__ = ["routeMTU"]

IP_MTU: int = getattr(socket, "IP_MTU", 14)  # Linux's values, where Python lacks the names
IPV6_MTU: int = getattr(socket, "IPV6_MTU", 24)


def routeMTU(local: str, peer: str) -> int | None:
    """
    The MTU of the route from the local address C{local} to C{peer}, or None if the kernel
    cannot say (no route, an address not ours any more, a platform without C{IP_MTU}).
    V4-mapped addresses count as the IPv4 addresses they are.
    """
    local, peer = hostOf(local), hostOf(peer)
    if ":" in peer:
        family, level, option = socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_MTU
    else:
        family, level, option = socket.AF_INET, socket.IPPROTO_IP, IP_MTU
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((local, 0))
            probe.connect((peer, 9))
            return int(probe.getsockopt(level, option))
    except OSError:
        return None
