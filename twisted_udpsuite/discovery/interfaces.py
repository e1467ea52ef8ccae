"""
This machine's IPv4 interfaces with their real netmasks, for directed
broadcasts (assuming /24 is a classic discovery bug).

Linux only, through C{SIOCGIFADDR}/C{SIOCGIFNETMASK}/C{SIOCGIFFLAGS}; on
other systems, or if the ioctls fail, L{broadcastInterfaces} returns an empty
list and discovery falls back to the limited broadcast 255.255.255.255.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

from twisted.logger import Logger

__all__ = ["InterfaceInfo", "broadcastInterfaces", "directedBroadcasts", "multicastInterfaceNames"]

log = Logger(namespace="twisted_udpsuite.discovery")

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_POINTOPOINT = 0x10
_IFF_MULTICAST = 0x1000

InterfaceInfo = tuple[str, ipaddress.IPv4Interface]


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes:
    import fcntl

    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))


def _interfaceFlags() -> Iterator[tuple[socket.socket, str, int]]:
    """
    (ioctl socket, name, flags) of every interface, for the callers to filter.
    Nothing (logged at debug) where interfaces cannot be listed.
    """
    try:
        names = socket.if_nameindex()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, AttributeError) as e:
        log.debug("cannot list interfaces: {error}", error=e)
        return
    with sock:
        for _, name in names:
            try:
                flags = struct.unpack_from("H", _ioctl(sock, _SIOCGIFFLAGS, name), 16)[0]
            except (OSError, ImportError):
                continue
            yield sock, name, flags


def broadcastInterfaces() -> list[InterfaceInfo]:
    """
    (name, address/prefix) of every interface that is up, has an IPv4
    address and can broadcast (loopback and point-to-point links excluded).
    Only each interface's primary IPv4 address is seen.
    """
    found = []
    for sock, name, flags in _interfaceFlags():
        if not flags & _IFF_UP or not flags & _IFF_BROADCAST:
            continue
        if flags & (_IFF_LOOPBACK | _IFF_POINTOPOINT):
            continue
        try:
            address = socket.inet_ntoa(_ioctl(sock, _SIOCGIFADDR, name)[20:24])
            netmask = socket.inet_ntoa(_ioctl(sock, _SIOCGIFNETMASK, name)[20:24])
        except OSError:
            continue  # no IPv4 address on it (EADDRNOTAVAIL)
        found.append((name, ipaddress.IPv4Interface(f"{address}/{netmask}")))
    return found


def directedBroadcasts(interfaces: list[ipaddress.IPv4Interface]) -> list[str]:
    """The directed broadcast address of each interface that has one, once each."""
    out: list[str] = []
    for interface in interfaces:
        if interface.ip.is_loopback or interface.network.prefixlen >= 31:
            continue
        address = str(interface.network.broadcast_address)
        if address not in out:
            out.append(address)
    return out


def multicastInterfaceNames() -> list[str]:
    """
    Names of the interfaces that are up and multicast-capable, loopback
    excluded: the scopes to send C{ff02::1%NAME} on.  Empty if unknown.
    """
    return [
        name
        for _, name, flags in _interfaceFlags()
        if flags & _IFF_UP and flags & _IFF_MULTICAST and not flags & _IFF_LOOPBACK
    ]
