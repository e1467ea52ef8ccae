"""
Address helpers shared by every protocol: parsing C{HOST[:PORT]} arguments
and telling which source addresses a UDP service must never answer.

L{isUnanswerableSource} is the one source check every UDP service makes.
Besides the addresses that are never a host's (multicast, 255.255.255.255,
...), it refuses the broadcast addresses of this host's own subnets, which
only the netmasks tell: L{LocalBroadcasts} reads them from the kernel
(netlink, every address of every interface) and keeps them for a short
while, so a new interface or address is covered within seconds.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Container, Iterable

from twisted.logger import Logger

__all__ = [
    "LocalBroadcasts",
    "hostOf",
    "isUnanswerableSource",
    "localBroadcasts",
    "parseHostPort",
    "readLocalBroadcasts",
    "subnetBroadcasts",
]

log = Logger(namespace="twisted_udpsuite.addresses")


def parseHostPort(text: str, defaultPort: int | None = None) -> tuple[str, int]:
    """
    Parse C{HOST}, C{HOST:PORT}, C{[V6]:PORT}, C{[V6]} or a bare IPv6 literal.

    @raise ValueError: with a message fit for a user, if C{text} is none of
        those or the port is missing (and no default) or out of range.
    """
    text = text.strip()
    host: str
    port: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        port = rest[1:] if rest else None
    elif text.count(":") > 1:
        host, port = text, None  # a bare IPv6 literal
    elif ":" in text:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port is None or port == "":
        if defaultPort is None:
            raise ValueError(f"{text!r}: no port (use HOST:PORT)")
        return host, defaultPort
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
    return host, int(port)


def hostOf(address: str) -> str:
    """The address without a V4-mapped prefix or scope id, for keys and logs."""
    address = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def isUnanswerableSource(address: str, broadcasts: Container[str] | None = None) -> bool:
    """
    True for source addresses no unicast service should reply to: they can
    only be forged or broadcast-derived, and answering them feeds storms
    (Fraggle) and reflection.  Covers unspecified, broadcast, multicast and
    reserved IPv4 (0/8, 224/4, 240/4) and IPv6 (::, ff00::/8), V4-mapped or
    not, and the broadcast (and network) address of every subnet this host
    is on; anything that is not an IP address at all is refused too.

    @param broadcasts: the local subnets' broadcast addresses; by default
        L{localBroadcasts}, read from the kernel.
    """
    try:
        ip = ipaddress.ip_address(hostOf(address))
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return (
            ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or ip in _THIS_NETWORK
            or ip == _LIMITED_BROADCAST
            or str(ip) in (localBroadcasts if broadcasts is None else broadcasts)
        )
    return ip.is_multicast or ip.is_unspecified


def subnetBroadcasts(interface: ipaddress.IPv4Interface) -> list[str]:
    """
    The addresses of C{interface}'s subnet that are no host's: its broadcast
    address and its network address (Linux takes both as broadcasts), none
    for /31 and /32.
    """
    network = interface.network
    if network.prefixlen >= 31:
        return []
    return [str(network.broadcast_address), str(network.network_address)]


class LocalBroadcasts:
    """
    The broadcast addresses of this host's subnets, as a container of
    strings, read again when C{ttl} seconds have passed since the last read
    (so a flood costs one read per C{ttl}, and a new address counts soon).

    @param read: lists the addresses (default L{readLocalBroadcasts}).
    @param seconds: the clock (a reactor's C{seconds} in tests).
    """

    def __init__(
        self,
        read: Callable[[], Iterable[str]] | None = None,
        seconds: Callable[[], float] = time.monotonic,
        ttl: float = 1.0,
    ) -> None:
        self._read = read if read is not None else readLocalBroadcasts
        self._seconds = seconds
        self.ttl = ttl
        self._addresses: frozenset[str] = frozenset()
        self._expires: float | None = None

    def __contains__(self, address: object) -> bool:
        now = self._seconds()
        if self._expires is None or now >= self._expires:
            self._addresses = frozenset(self._read())
            self._expires = now + self.ttl
        return address in self._addresses


_RTM_GETADDR = 22
_RTM_NEWADDR = 20
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_ROOT | NLM_F_MATCH
_IFA_ADDRESS, _IFA_LOCAL, _IFA_BROADCAST = 1, 2, 4
_NLMSG = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def readLocalBroadcasts() -> list[str]:
    """
    The broadcast addresses of every IPv4 address on every interface
    (secondary ones too), from a netlink C{RTM_GETADDR} dump: the subnet's
    broadcast and network addresses from the netmask, and the broadcast
    address configured on it.  Empty (logged at debug) where netlink is
    missing (not Linux) or fails.
    """
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(1.0)
            sock.bind((0, 0))
            request = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
            size = _NLMSG.size + len(request)
            sock.send(_NLMSG.pack(size, _RTM_GETADDR, _NLM_F_DUMP_REQUEST, 1, 0) + request)
            found: list[str] = []
            while _parseAddressDump(sock.recv(65536), found):
                pass
            return found
    except (OSError, AttributeError) as e:
        log.debug("cannot read the local broadcast addresses: {error}", error=e)
        return []


def _parseAddressDump(data: bytes, found: list[str]) -> bool:
    """Add the addresses of one netlink read to C{found}; False once the dump ends."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind = _NLMSG.unpack_from(data, offset)[:2]
        if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _NLMSG.size:
            return False
        if kind == _RTM_NEWADDR:
            _addressBroadcasts(data[offset + _NLMSG.size : offset + length], found)
        offset += (length + 3) & ~3
    return True


def _addressBroadcasts(message: bytes, found: list[str]) -> None:
    """The broadcasts of one C{ifaddrmsg} with its attributes, into C{found}."""
    if len(message) < _IFADDRMSG.size:
        return
    family, prefixlen = _IFADDRMSG.unpack_from(message)[:2]
    if family != socket.AF_INET:
        return
    attributes: dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(message):
        length, kind = _RTATTR.unpack_from(message, offset)
        if length < _RTATTR.size:
            break
        attributes[kind] = message[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    local = attributes.get(_IFA_LOCAL, attributes.get(_IFA_ADDRESS))
    candidates = []
    if local is not None and len(local) == 4:
        interface = ipaddress.IPv4Interface((socket.inet_ntoa(local), prefixlen))
        candidates += subnetBroadcasts(interface)
    broadcast = attributes.get(_IFA_BROADCAST)
    if broadcast is not None and len(broadcast) == 4:
        candidates.append(socket.inet_ntoa(broadcast))
    found.extend(a for a in candidates if a not in found)


#: The host's own broadcast addresses, as L{isUnanswerableSource} checks them.
localBroadcasts = LocalBroadcasts()


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
