# -*- test-case-name: tests.test_unreachable -*-
"""
UDP ports that tell their protocol when a peer's port turned out to be closed.

When a datagram reaches a host with no socket on its port, the host answers with ICMP
"port unreachable". Linux passes that on only to a connected socket, or to any socket with
C{IP_RECVERR} set, where it waits in the socket's error queue together with the address it
was sent to. A TFTP transfer port cannot be connected: a datagram from any other source
must still reach it, to be answered with ERROR 5 (RFC 1350). So L{listenUDP} gives a port
with C{IP_RECVERR} that reads its error queue and calls
L{IUnreachableReceiver.destinationUnreachable} with the destination that was refused.

Twisted's own C{udp.Port} is no help here: on an error alone (no datagram waiting) the
epoll and poll reactors report the port as disconnected and stop it, so a connected
C{udp.Port} is closed by the first ICMP error rather than told C{connectionRefused}.
L{UnreachableReportingPort} takes that report as "read the error queue" and goes on.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from twisted.internet.interfaces import IHalfCloseableDescriptor, IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from twisted_udpsuite.localaddress import _hasPacketInfo
from twisted_udpsuite.twistedprivate import SocketBoundPort

__all__ = ["IUnreachableReceiver", "UnreachableReportingPort", "listenUDP"]

IP_RECVERR = 11  # Linux's values; Python's socket module does not name them
IPV6_RECVERR = 25
_ORIGINS_ICMP = frozenset({2, 3})  # SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6
_EXTENDED_ERROR = struct.Struct("=IBBBBII")  # struct sock_extended_err, without the offender
_ERROR_SPACE = socket.CMSG_SPACE(_EXTENDED_ERROR.size + 28)  # with a sockaddr_in6
_QUEUED_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
_NOTHING_TO_READ = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_IGNORED_READ_ERRORS = frozenset({errno.EINTR, errno.ENOBUFS})
_MAX_ERRORS_PER_READ = 64


class IUnreachableReceiver(Interface):
    """A datagram protocol that wants to know which of its peers' ports are closed."""

    def destinationUnreachable(addr: tuple[str, int]) -> None:
        """
        ICMP port unreachable came back for a datagram sent to C{addr}: nothing listens
        there (any more). Other destinations of the same port are unaffected.
        """


@implementer(IHalfCloseableDescriptor)
class UnreachableReportingPort(SocketBoundPort):
    """
    A C{udp.Port} with C{IP_RECVERR}: ICMP port unreachable for a datagram it sent is
    reported to its protocol (L{IUnreachableReceiver}, if it provides it) and otherwise
    dropped; reading and writing go on.
    """

    _log = Logger()
    _receiver: Any = None  # the protocol as an IUnreachableReceiver (False: it is not one)

    def socketBound(self) -> None:
        """Ask for ICMP errors (both families' on an IPv6 socket)."""
        options = [(socket.IPPROTO_IP, IP_RECVERR)]
        if self.addressFamily == socket.AF_INET6:
            options.append((socket.IPPROTO_IPV6, IPV6_RECVERR))
        for level, option in options:
            try:
                self.socket.setsockopt(level, option, 1)
            except OSError as e:  # an IPv6-only socket refuses the IPv4 option
                self._log.debug("cannot ask for ICMP errors: {error}", error=e)

    def doRead(self) -> None:
        """As C{udp.Port.doRead}; on a pending error, or a wake-up with nothing to read
        (an error queued after a send took the error), the error queue is read."""
        recvfrom = self.socket.recvfrom
        read = 0
        while read < self.maxThroughput:
            try:
                data, addr = recvfrom(self.maxPacketSize)
            except OSError as e:
                self._readFailed(e, read > 0)
                return
            read += len(data)
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                self._log.failure("unhandled error in {protocol}", protocol=self.protocol)

    def _readFailed(self, error: OSError, readSome: bool) -> None:
        """
        A read failed: an error is queued, or nothing (more) is there; else raise.

        Nothing there on the first read of a wake-up means the wake-up was for an error that
        a send took (the queue holds it still): read the queue. After datagrams were read
        it only means they are all read; a queued error keeps the socket ready, so the next
        wake-up reads it (not asking here saves a system call on every lock-step block).
        """
        if error.errno in _QUEUED_ERRORS:
            self.readErrors()
        elif error.errno in _NOTHING_TO_READ:
            if not readSome:
                self.readErrors()
        elif error.errno not in _IGNORED_READ_ERRORS:
            raise error

    def readConnectionLost(self, reason: Failure) -> None:
        """
        The reactor saw an error and no datagram: that is a queued ICMP error, not the end
        of the socket. Read the queue and listen on (the reactor stopped reading).
        """
        if self.socket is None or self.readErrors() is None:
            self.connectionLost(reason)  # type: ignore[no-untyped-call]
            return
        self.startReading()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self, reason: Failure) -> None:
        self.connectionLost(reason)  # type: ignore[no-untyped-call]

    def readErrors(self) -> int | None:
        """
        Read the error queue; tell the protocol of every refused destination. Returns how
        many errors were read, or None if the socket cannot be read at all.
        """
        receiver = self._receiver
        if receiver is None:
            receiver = self._receiver = IUnreachableReceiver(self.protocol, False)
        count = 0
        while count < _MAX_ERRORS_PER_READ:
            try:
                _, ancillary, _, addr = self.socket.recvmsg(
                    0, _ERROR_SPACE, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return count
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                self._log.debug("cannot read the error queue: {error}", error=e)
                return None
            count += 1
            if receiver is not False and addr and _isPortUnreachable(ancillary):
                try:
                    receiver.destinationUnreachable((addr[0], addr[1]))
                except Exception:
                    self._log.failure("unhandled error in {protocol}", protocol=self.protocol)
        return count


def _isPortUnreachable(ancillary: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            if len(data) >= _EXTENDED_ERROR.size:
                code, origin = _EXTENDED_ERROR.unpack_from(data)[:2]
                return code == errno.ECONNREFUSED and origin in _ORIGINS_ICMP
    return False


def listenUDP(
    reactor: IReactorUDP,
    port: int,
    protocol: DatagramProtocol,
    interface: str = "",
    maxPacketSize: int = 8192,
    portType: type[UnreachableReportingPort] = UnreachableReportingPort,
) -> IListeningPort:
    """
    C{reactor.listenUDP} with unreachable peers reported: a C{portType} (an
    L{UnreachableReportingPort}) on a real POSIX reactor on Linux; elsewhere the reactor's
    own port, asked to report them if it can (the in-memory network's ports can:
    C{reportsUnreachable}).
    """
    if _hasPacketInfo(reactor):
        reporting = portType(port, protocol, interface, maxPacketSize, reactor)
        reporting.listen()
        return reporting
    listening = reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=maxPacketSize)
    if hasattr(listening, "reportsUnreachable"):
        listening.reportsUnreachable = True
    return listening
