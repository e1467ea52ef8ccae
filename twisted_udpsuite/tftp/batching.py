# -*- test-case-name: tests.tftp.test_batching -*-
"""
A TFTP window in one system call each way, on Linux: UDP segmentation offload (GSO) sends
a whole window with one C{sendmsg}, and generic receive offload (GRO) reads it with one
C{recvmsg}; elsewhere, one datagram per call.

Sending (L{DatagramSender}): the blocks of a window are all C{4 + blksize} bytes but the
last, which may be shorter, exactly what C{UDP_SEGMENT} asks of a batch. The scatter list
is each block's 4-byte header and its payload (a slice of the file's mapping: nothing is
copied in Python). The kernel cuts the batch into ordinary datagrams, so any receiver sees
plain DATA packets. Whether it can is found out at run time: the option must exist
(C{getsockopt}, Linux 4.18 on), and a batch the route or device cannot segment fails with
C{EIO} or C{EINVAL} (a segment longer than the path's MTU, say); the socket then sends one
datagram per call from then on, starting with that batch.

Receiving (L{TransferPort}): with C{UDP_GRO} set, the kernel may hand over several
datagrams of one flow in one read, with their segment size in a control message; the port
splits them again (L{splitCoalesced}). On loopback a GSO batch reaches a GRO socket whole.

Its receive buffer must hold a window: L{reserveReceiveBuffer} raises C{SO_RCVBUF} (past
C{net.core.rmem_max} with C{SO_RCVBUFFORCE} where we may, as root) and says when it could
not; a window of 16 blocks of 8192 bytes does not fit the default buffer, and each
overflow costs a retransmission timeout.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReactorUDP, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite import unreachable
from twisted_udpsuite.localaddress import BAD_SOURCE_ERRORS, packetInfo
from twisted_udpsuite.unreachable import UnreachableReportingPort

if TYPE_CHECKING:
    from twisted_udpsuite.tftp.transfer import OutgoingPacket

__all__ = [
    "MAX_SEGMENTS",
    "UDP_GRO",
    "UDP_SEGMENT",
    "DatagramSender",
    "TransferPoller",
    "TransferPort",
    "datagramCost",
    "listenUDP",
    "reserveReceiveBuffer",
    "segmentationAvailable",
    "senderFor",
    "splitCoalesced",
    "windowBuffer",
]

UDP_SEGMENT = 103
"""C{setsockopt}/control message level C{IPPROTO_UDP}: the segment size of a GSO batch."""
UDP_GRO = 104
"""C{setsockopt} level C{IPPROTO_UDP}: deliver coalesced datagrams, with their size."""
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
MAX_SEGMENTS = 64
"""Segments per batch: Linux's C{UDP_MAX_SEGMENTS} (128 on the newest kernels, 64 before)."""
MAX_BATCH = 65507
"""Bytes per batch: the largest UDP payload over IPv4 (a dual-stack socket may send IPv4)."""

_SEGMENTATION_REFUSED = frozenset(
    {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
)
_UDP = socket.IPPROTO_UDP
_GRO_SPACE = socket.CMSG_SPACE(4)


def segmentationAvailable(sock: Any) -> bool:
    """
    Whether C{sock} can send GSO batches: an IP datagram socket on Linux whose kernel knows
    C{UDP_SEGMENT}, or an in-memory port that says so (the same C{getsockopt}).
    """
    if isinstance(sock, socket.socket):
        if not sys.platform.startswith("linux"):
            return False  # option 103 means something else, or nothing, elsewhere
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
    try:
        sock.getsockopt(_UDP, UDP_SEGMENT)
    except (OSError, AttributeError):
        return False
    return True


def _length(packet: OutgoingPacket) -> int:
    if type(packet) is tuple:
        header, payload = packet
        return len(header) + len(payload)
    return len(packet)


class DatagramSender:
    """
    Sends one transfer's datagrams to its peer, from a socket (or anything with the same
    C{sendto}/C{sendmsg}/C{getsockopt}: the in-memory network's ports).

    Errors never escape: a datagram that cannot go is lost, and the engine resends on its
    timer. C{ECONNREFUSED} on a send is an ICMP error queued earlier (maybe for a stray),
    not this send's: it is sent again once.

    @ivar segmenting: whether windows go out as GSO batches (it falls back for good on the
        first batch the kernel refuses).
    @ivar batches: GSO batches sent (for tests and benchmarks).
    """

    log = Logger()

    def __init__(
        self,
        sock: Any,
        peer: tuple[str, int],
        *,
        local: str | None = None,
        family: int = socket.AF_INET,
        fileShrank: Callable[[], None] | None = None,
    ) -> None:
        """
        @param local: send from this local address (packet info, as
            L{twisted_udpsuite.localaddress.writeFrom}): for a socket bound to a wildcard
            address that must answer from the address its peer used. Batches carry it too.
        @param fileShrank: called when the kernel could not read a payload (C{EFAULT}: the
            mapped file shrank under it); the datagram is lost.
        """
        self._sendto = sock.sendto
        self._sendmsg = sock.sendmsg
        self.peer = peer
        self._info = [packetInfo(local, family)] if local else []
        self._fileShrank = fileShrank
        self.segmenting = segmentationAvailable(sock)
        self.batches = 0
        self._control: dict[int, list[tuple[int, int, bytes]]] = {}

    def send(self, packet: OutgoingPacket) -> None:
        """One datagram: bytes-like, or a C{(header, payload)} pair sent as one."""
        if isinstance(packet, tuple):
            self._call(packet, self._info)
        elif self._info:
            self._call((packet,), self._info)
        else:
            for attempt in (1, 2):
                try:
                    self._sendto(packet, self.peer)
                    return
                except OSError as e:
                    if attempt == 2 or not self._failed(e):
                        return

    def sendWindow(self, packets: Sequence[OutgoingPacket]) -> None:
        """
        Several datagrams, each of the first one's length but the last (which may be
        shorter): in as few GSO batches as the kernel's limits allow, or one call each.
        """
        count = len(packets)
        if count < 2 or not self.segmenting:
            for packet in packets:
                self.send(packet)
            return
        size = _length(packets[0])
        perBatch = min(MAX_SEGMENTS, MAX_BATCH // size)
        if perBatch < 2:
            for packet in packets:
                self.send(packet)
            return
        control = self._control.get(size)
        if control is None:
            control = [*self._info, (_UDP, UDP_SEGMENT, struct.pack("@H", size))]
            self._control = {size: control}
        for start in range(0, count, perBatch):
            batch = packets[start : start + perBatch]
            buffers: list[bytes | bytearray | memoryview] = []
            add = buffers.append
            last = len(batch) - 1
            for index, packet in enumerate(batch):
                if type(packet) is tuple:
                    header, payload = packet
                    add(header)
                    add(payload)
                    length = len(header) + len(payload)
                else:
                    add(packet)  # type: ignore[arg-type]  # (bytes or bytearray)
                    length = len(packet)
                if length != size and index < last:
                    raise ValueError("only the last datagram of a window may be shorter")
            if last == 0:
                self.send(batch[0])
                continue
            if not self._call(buffers, control):
                # The kernel cannot segment for this socket: this batch and every later
                # one go a datagram at a time.
                self.segmenting = False
                self.log.info(
                    "UDP segmentation offload refused for {peer}: one datagram per call",
                    peer=self.peer,
                )
                for packet in packets[start:]:
                    self.send(packet)
                return
            self.batches += 1

    def _call(
        self,
        buffers: Sequence[bytes | bytearray | memoryview],
        control: list[tuple[int, int, bytes]],
    ) -> bool:
        """C{sendmsg}; False only if a GSO batch was refused (the caller falls back)."""
        for attempt in (1, 2):
            try:
                self._sendmsg(buffers, control, 0, self.peer)
                return True
            except OSError as e:
                segmented = len(control) > len(self._info)
                if segmented and e.errno in _SEGMENTATION_REFUSED:
                    return False
                if self._info and e.errno in BAD_SOURCE_ERRORS:
                    # Not an address we may send from (any more): let the kernel choose.
                    self._info = []
                    self._control = {}
                    control = [c for c in control if c[0] == _UDP]
                    continue
                if attempt == 2 or not self._failed(e):
                    return True
        return True

    def _failed(self, error: OSError) -> bool:
        """A send failed: True to try once more (a queued ICMP error was reported)."""
        if error.errno == errno.ECONNREFUSED:
            return True
        if error.errno == errno.EFAULT and self._fileShrank is not None:
            self._fileShrank()
        self.log.debug("cannot send to {peer}: {error}", peer=self.peer, error=error)
        return False


def senderFor(transport: Any, peer: tuple[str, int], **kwargs: Any) -> DatagramSender | None:
    """
    A L{DatagramSender} on C{transport}'s socket (a real port's, or the in-memory port
    itself); None for a transport that offers neither (then write to it as usual).
    """
    sock = getattr(transport, "socket", None)
    if sock is None or not hasattr(sock, "sendmsg"):
        sock = transport if hasattr(transport, "sendmsg") else None
    if sock is None:
        return None
    family = getattr(sock, "family", socket.AF_INET)
    if ":" in peer[0]:
        family = socket.AF_INET6
    return DatagramSender(sock, peer, family=family, **kwargs)


def splitCoalesced(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> list[memoryview] | None:
    """
    The datagrams in one GRO read: C{data} cut by the segment size in its C{UDP_GRO}
    control message (the last may be shorter), as views of C{data} (nothing is copied);
    None if it holds one datagram.
    """
    for level, kind, value in ancillary:
        if level == _UDP and kind == UDP_GRO and len(value) >= 2:
            size = struct.unpack("@i" if len(value) >= 4 else "@H", value[:4])[0]
            if 0 < size < len(data):
                view = memoryview(data)
                return [view[start : start + size] for start in range(0, len(data), size)]
    return None


def datagramCost(payload: int) -> int:
    """
    Receive buffer one datagram of C{payload} bytes takes, as the kernel counts it (its
    buffer's true size, not its length: measured on loopback, 8196 bytes take 17 KiB).
    """
    if payload < 32768:
        return (1 << (payload + 320).bit_length()) + 1024
    return payload + 8192


def windowBuffer(blksize: int, windowsize: int) -> int:
    """Receive buffer for a window of C{windowsize} blocks, with room for a second one
    (a resent window may arrive before the first is read)."""
    return 2 * windowsize * datagramCost(4 + blksize)


def reserveReceiveBuffer(sock: Any, wanted: int) -> tuple[int, bool]:
    """
    Raise C{sock}'s receive buffer to at least C{wanted} bytes (as the kernel counts, so
    twice what C{SO_RCVBUF} is given). It is not left lower than it was, unless
    C{net.core.rmem_max} is below half the default (then it is left at twice rmem_max).

    @return: the buffer now (bytes) and whether it falls short of C{wanted}
        (C{net.core.rmem_max}, and we may not force past it).
    """
    try:
        current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return 0, True
    if current >= wanted:
        return current, False
    # Forced first (as root: exactly what is asked); else as much as rmem_max allows.
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, (wanted + 1) // 2)
        except OSError:
            continue
        now = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if now >= wanted:
            return now, False
        if now < current:  # rmem_max below the default: put the default back if we can
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, current // 2)
            except OSError:
                pass
            now = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return now, True
    return current, True


@implementer(IReadDescriptor)
class TransferPoller:
    """
    One reactor reader for all the transfer ports of a reactor: an epoll set of their
    sockets. The reactor wakes it once however many transfers have a datagram waiting, and
    it calls each port's C{doRead} itself, then looks again (up to L{ROUNDS} times) before
    it returns to the reactor: no per-socket Twisted dispatch (a logging context, about
    1.7 us a datagram, more than the engine's own work for an ACK), and with many
    transfers at once fewer reactor iterations.
    """

    ROUNDS = 4
    log = Logger()

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._epoll = select.epoll()
        self._ports: dict[int, TransferPort] = {}
        self._fds: dict[TransferPort, int] = {}

    def __contains__(self, port: object) -> bool:
        """Whether C{port} is read through this poller."""
        return port in self._fds

    def __len__(self) -> int:
        """How many ports are read through it."""
        return len(self._fds)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def logPrefix(self) -> str:
        return "TransferPoller"

    def add(self, port: TransferPort) -> None:
        if port in self._fds:
            return
        fd = port.fileno()  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except FileExistsError:  # a closed socket's number, reused before it was removed
            self._epoll.modify(fd, select.EPOLLIN)
        self._ports[fd] = port
        self._fds[port] = fd
        if len(self._fds) == 1:
            self._reactor.addReader(self)

    def remove(self, port: TransferPort) -> None:
        fd = self._fds.pop(port, None)
        if fd is None:
            return
        if self._ports.get(fd) is port:
            del self._ports[fd]
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # closed already: the kernel forgot it
        if not self._fds:
            self._reactor.removeReader(self)

    def doRead(self) -> None:
        ports = self._ports
        if len(ports) == 1:
            # One transfer: it is the one ready, no need to ask (its doRead reads the error
            # queue when the wake-up was for an ICMP error and no datagram).
            (only,) = ports.values()  # (taken before the read, which may remove it)
            try:
                only.doRead()
            except BaseException:
                self._readFailed(only)
            return
        poll = self._epoll.poll
        for _ in range(self.ROUNDS):
            events = poll(0)
            for fd, event in events:
                port = ports.get(fd)
                if port is not None:
                    self._ready(port, event)
            if not events:
                return

    def _ready(self, port: TransferPort, event: int) -> None:
        """As the reactor's own dispatch: read, or on an error alone, read the error."""
        try:
            if event & select.EPOLLIN:
                port.doRead()
            else:
                self.remove(port)
                port.readConnectionLost(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]
        except BaseException:
            self._readFailed(port)

    def _readFailed(self, port: TransferPort) -> None:
        """A port's read raised: log it and close the port, as the reactor would."""
        self.log.failure("reading {port}", port=port)
        self.remove(port)
        # Failure() and udp.Port.connectionLost are unannotated in Twisted.
        port.connectionLost(Failure())  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        """The reactor is done with us (it is shutting down): so with every port, as it
        would have told each had they been its own readers."""
        for port in list(self._fds):
            self.remove(port)
            try:
                port.connectionLost(reason)  # type: ignore[no-untyped-call]
            except Exception:
                self.log.failure("closing {port}", port=port)


_pollers: WeakKeyDictionary[IReactorFDSet, TransferPoller] = WeakKeyDictionary()


def _pollerFor(reactor: IReactorFDSet) -> TransferPoller:
    poller = _pollers.get(reactor)
    if poller is None:
        poller = _pollers[reactor] = TransferPoller(reactor)
    return poller


class TransferPort(UnreachableReportingPort):
    """
    A transfer's port: reports unreachable peers (L{UnreachableReportingPort}) and, once
    L{receiveCoalesced} is on, reads coalesced windows with C{recvmsg} and hands the
    datagrams in them to the protocol, in order: all at once to its
    C{datagramsReceived(datagrams, addr)} if it has one (as views of the read, uncopied),
    else one by one (as bytes).
    """

    _coalescing = False
    coalescedReads = 0
    """Reads that held several datagrams (for tests and benchmarks)."""

    def startReading(self) -> None:
        _pollerFor(self.reactor).add(self)

    def stopReading(self) -> None:
        _pollerFor(self.reactor).remove(self)

    def receiveCoalesced(self) -> bool:
        """Ask for coalesced reads (C{UDP_GRO}); whether the kernel agreed."""
        try:
            self.socket.setsockopt(_UDP, UDP_GRO, 1)
        except OSError as e:
            self._log.debug("no UDP GRO: {error}", error=e)
            return False
        self._coalescing = True
        return True

    def doRead(self) -> None:
        """
        As L{UnreachableReportingPort.doRead}, but once coalescing, with C{recvmsg}: that is
        checked before each read, since the protocol may ask for it on the datagram just
        read (a client, on the server's OACK), and a window that then arrives coalesced
        must not be taken for one datagram.
        """
        sock = self.socket
        size = self.maxPacketSize
        six = self.addressFamily == socket.AF_INET6
        read = 0
        while read < self.maxThroughput:
            try:
                if self._coalescing:
                    data, ancillary, _, addr = sock.recvmsg(size, _GRO_SPACE)
                else:
                    data, addr = sock.recvfrom(size)
                    ancillary = None
            except OSError as e:
                self._readFailed(e, read > 0)
                return
            read += len(data)
            if six:
                addr = addr[:2]
            protocol = self.protocol
            try:
                parts = splitCoalesced(data, ancillary) if ancillary else None
                if parts is None:
                    protocol.datagramReceived(data, addr)
                else:
                    self.coalescedReads += 1
                    many = getattr(protocol, "datagramsReceived", None)
                    if many is not None:
                        many(parts, addr)
                    else:
                        for part in parts:
                            protocol.datagramReceived(bytes(part), addr)
            except BaseException:
                self._log.failure("unhandled error in {protocol}", protocol=protocol)


def listenUDP(
    reactor: IReactorUDP,
    port: int,
    protocol: DatagramProtocol,
    interface: str = "",
    maxPacketSize: int = 65536,
) -> IListeningPort:
    """A transfer port: a L{TransferPort} where L{unreachable.listenUDP} gives its own."""
    return unreachable.listenUDP(
        reactor, port, protocol, interface, maxPacketSize, portType=TransferPort
    )
