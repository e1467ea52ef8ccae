# -*- test-case-name: tests.test_localaddress -*-
"""
UDP ports that tell their protocol which local address each datagram was sent to.

A server bound to a wildcard address (C{0.0.0.0}, C{::}) on a host with several addresses
must answer from the address its client used: TFTP clients (PXE ROMs, tftp-hpa, curl) take
an answer from another address for a stranger's.  The kernel says which address it was in
C{IP_PKTINFO} / C{IPV6_PKTINFO} ancillary data, which Twisted's C{udp.Port} (reading with
C{recvfrom}) never asks for.  L{listenUDP} gives a port that asks, when it helps: on a
wildcard address of a real POSIX reactor; anywhere else it is the reactor's own port.
Answering from the listening socket itself, L{writeFrom} sets the source address of one
datagram (the same ancillary data, on C{sendmsg}).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from typing import Any, TypeGuard

from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReactorSocket, IReactorUDP
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import Interface

from twisted_udpsuite.twistedprivate import SocketBoundPort

__all__ = [
    "BAD_SOURCE_ERRORS",
    "ILocalAddressReceiver",
    "LocalAddressPort",
    "adoptDatagramPort",
    "listenUDP",
    "localAddressFrom",
    "packetInfo",
    "writeFrom",
]

IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python < 3.13 lacks it

_ANCILLARY_SPACE = socket.CMSG_SPACE(20) * 2  # one in_pktinfo or in6_pktinfo, with room
_IGNORED_READ_ERRORS = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED, errno.ENOBUFS}
)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
BAD_SOURCE_ERRORS = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH})
"""What C{sendmsg} answers when told to send from an address that is not (or no longer) ours."""


def packetInfo(local: str, family: int) -> tuple[int, int, bytes]:
    """
    The C{sendmsg} control message that sends from the local address C{local} (as given to
    L{ILocalAddressReceiver.datagramReceivedAt}) on a socket of C{family}.
    """
    host, _, scope = local.partition("%")
    if family == socket.AF_INET6:
        index = int(scope) if scope.isdigit() else 0
        info = socket.inet_pton(socket.AF_INET6, host) + struct.pack("@I", index)
        return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)
    info = struct.pack("@i", 0) + socket.inet_aton(host) + bytes(4)
    return (socket.IPPROTO_IP, IP_PKTINFO, info)


class ILocalAddressReceiver(Interface):
    """A datagram protocol that wants to know where each datagram was sent."""

    def datagramReceivedAt(datagram: bytes, addr: Any, local: str | None) -> None:
        """
        Like C{datagramReceived}, with C{local}: the local address the datagram was sent
        to (a unicast address of this host, the right source for an answer), or None when
        the kernel did not say or the destination was not one (multicast).
        """


def localAddressFrom(ancillary: list[tuple[int, int, bytes]], family: int) -> str | None:
    """
    The local address for an answer, from C{recvmsg}'s ancillary data.

    IPv4's C{in_pktinfo} carries C{ipi_spec_dst}, the local address the kernel itself would
    answer from (an interface's address even for a broadcast), and is preferred; IPv6's
    C{in6_pktinfo} only the header's destination, kept unless it is multicast, or IPv4 (on
    a dual-stack socket IPv4 gets both; its header destination may be a broadcast). A
    link-local IPv6 address gets its interface as a scope (C{fe80::1%2}) so that a socket
    can be bound to it. On an IPv6 socket an IPv4 address is given V4-mapped, as the
    socket's peers are.
    """
    found: str | None = None
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            address = socket.inet_ntop(socket.AF_INET, data[4:8])
            return f"::ffff:{address}" if family == socket.AF_INET6 else address
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            parsed = ipaddress.IPv6Address(data[:16])
            if parsed.is_multicast or parsed.ipv4_mapped is not None:
                continue
            if parsed.is_link_local:
                (index,) = struct.unpack("@I", data[16:20])
                found = f"{parsed}%{index}"
            else:
                found = str(parsed)
    return found


class LocalAddressPort(SocketBoundPort):
    """
    A C{udp.Port} that reads with C{recvmsg} and hands protocols that provide
    L{ILocalAddressReceiver} the local address of each datagram.

    Also right for a socket adopted from another process (L{SocketBoundPort.adopt}):
    the options are set again on the shared socket, which is harmless.
    """

    _log = Logger()

    def socketBound(self) -> None:
        """Ask for the packet info of every datagram (both families' on an IPv6 socket)."""
        sock = self.socket
        options = [(socket.IPPROTO_IP, IP_PKTINFO)]
        if self.addressFamily == socket.AF_INET6:
            options.insert(0, (socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO))
        for level, option in options:
            try:
                sock.setsockopt(level, option, 1)
            except OSError as e:  # an IPv6-only socket refuses the IPv4 option
                self._log.debug("cannot ask for packet info: {error}", error=e)

    def writeFrom(self, datagram: bytes, addr: Any, local: str) -> None:
        """
        Send C{datagram} to C{addr} from the local address C{local} (as given to
        L{ILocalAddressReceiver.datagramReceivedAt}); errors as C{write}'s.
        """
        try:
            self.socket.sendmsg(
                [datagram], [packetInfo(local, self.addressFamily)], 0, (addr[0], addr[1])
            )
        except OSError as e:
            if e.errno not in BAD_SOURCE_ERRORS:
                raise
            # Not an address we may send from (it went since, say): let the kernel choose.
            self.write(datagram, addr)

    _receiver: Any = None  # the protocol as an ILocalAddressReceiver, found once

    def doRead(self) -> None:
        receiver = self._receiver
        if receiver is None:
            receiver = self._receiver = ILocalAddressReceiver(self.protocol, False)
        family = self.addressFamily
        recvmsg = self.socket.recvmsg
        read = 0
        while read < self.maxThroughput:
            try:
                data, ancillary, _, addr = recvmsg(self.maxPacketSize, _ANCILLARY_SPACE)
            except OSError as e:
                if e.errno in _IGNORED_READ_ERRORS:
                    return
                raise
            read += len(data)
            if family == socket.AF_INET6:
                addr = addr[:2]
            try:
                if receiver is False:
                    self.protocol.datagramReceived(data, addr)
                else:
                    receiver.datagramReceivedAt(data, addr, localAddressFrom(ancillary, family))
            except BaseException:
                self._log.failure("unhandled error in {protocol}", protocol=self.protocol)


def _hasPacketInfo(reactor: object) -> TypeGuard[IReactorFDSet]:
    """
    Whether C{reactor}'s UDP sockets are real ones whose packet info we know (Linux): a
    POSIX reactor, which reads descriptors itself.
    """
    return (
        isinstance(reactor, PosixReactorBase)
        and IReactorFDSet.providedBy(reactor)
        and sys.platform.startswith("linux")
    )


def listenUDP(
    reactor: IReactorUDP,
    port: int,
    protocol: DatagramProtocol,
    interface: str = "",
    maxPacketSize: int = 8192,
) -> IListeningPort:
    """
    C{reactor.listenUDP}, with a L{LocalAddressPort} where it matters and works: a wildcard
    C{interface} on a real POSIX reactor, on Linux.
    """
    if interface in _WILDCARDS and _hasPacketInfo(reactor):
        listening = LocalAddressPort(port, protocol, interface, maxPacketSize, reactor)
        listening.listen()
        return listening
    return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=maxPacketSize)


def adoptDatagramPort(
    reactor: IReactorSocket,
    fd: int,
    family: int,
    protocol: DatagramProtocol,
    maxPacketSize: int = 8192,
) -> IListeningPort:
    """
    C{reactor.adoptDatagramPort} (a socket another process bound, e.g. a TFTP worker's),
    with a L{LocalAddressPort} on a real POSIX reactor on Linux, as L{listenUDP}.
    """
    if _hasPacketInfo(reactor):
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"not an IP address family: {family}")
        adopted = LocalAddressPort.adopt(reactor, fd, family, protocol, maxPacketSize)
        adopted.listen()
        return adopted
    # Twisted's hint says AddressFamily; it takes any int (and refuses a bad one itself).
    return reactor.adoptDatagramPort(fd, family, protocol, maxPacketSize=maxPacketSize)  # type: ignore[arg-type]


def writeFrom(transport: Any, datagram: bytes, addr: Any, local: str | None) -> None:
    """
    Answer from C{local} when the transport can say so (a L{LocalAddressPort}, the in-memory
    network's port), else a plain C{transport.write}: a server bound to one address, or a
    datagram whose local address is unknown, answers from where the kernel chooses.
    """
    sendFrom = getattr(transport, "writeFrom", None) if local is not None else None
    if sendFrom is None:
        transport.write(datagram, addr)
    else:
        sendFrom(datagram, addr, local)
