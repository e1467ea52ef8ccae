"""
Address helpers shared by every protocol: parsing C{HOST[:PORT]} arguments
and telling which source addresses a UDP service must never answer.
"""

from __future__ import annotations

import ipaddress

__all__ = ["parseHostPort", "isUnanswerableSource", "hostOf"]


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


def isUnanswerableSource(address: str) -> bool:
    """
    True for source addresses no unicast service should reply to: they can
    only be forged or broadcast-derived, and answering them feeds storms
    (Fraggle) and reflection.  Covers unspecified, broadcast, multicast and
    reserved IPv4 (0/8, 224/4, 240/4) and IPv6 (::, ff00::/8), V4-mapped or
    not; anything that is not an IP address at all is refused too.
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
        )
    return ip.is_multicast or ip.is_unspecified


_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
