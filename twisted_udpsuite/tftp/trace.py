# -*- test-case-name: tests.tftp.test_pxe_trace -*-
"""
A wire trace of TFTP: every datagram a server or client sends or receives, as one compact
line (C{--trace}) and/or as a packet in a classic pcap file (C{--pcap FILE}) that
tcpdump, tshark and Wireshark read.

L{describe} is the line's summary, pure: the opcode, then what matters of it (a request's
name, mode and options; a block number and payload size; an error's code and text).
The pcap file has link type C{LINKTYPE_RAW} (101): each datagram is written as an IPv4 or
IPv6 packet with a UDP header (checksums computed), from the addresses the socket saw;
a wildcard local address is written as C{0.0.0.0} or C{::}.

A tracer (L{IWireTracer}) is given to L{TFTPServerProtocol} or to the client's C{get} and
C{put}; L{traceProtocol} wraps one transfer's protocol so that its datagrams reach it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from typing import IO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import Interface, implementer

from twisted_udpsuite.addresses import hostOf
from twisted_udpsuite.tftp.transfer import OutgoingPacket
from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    MalformedPacket,
    Opcode,
    ReadRequest,
    WriteRequest,
    parsePacket,
)

__all__ = [
    "IWireTracer",
    "PcapWriter",
    "TextTracer",
    "TracerGroup",
    "describe",
    "ipPacket",
    "logLine",
    "logTracer",
    "traceProtocol",
]

Address = tuple[str, int]

LINKTYPE_RAW = 101
_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_OPCODES = {int(opcode): opcode.name for opcode in Opcode}


class IWireTracer(Interface):
    """Gets every datagram of the transfers it is given to."""

    def datagram(outgoing: bool, local: Address, remote: Address, data: bytes) -> None:
        """C{data} went from C{local} to C{remote} (C{outgoing}) or the other way."""


def _options(options: dict[str, str]) -> str:
    return "".join(f" {name}={value}" for name, value in options.items())


def describe(data: bytes) -> str:
    """One datagram in a few words: C{RRQ 'pxelinux.0' octet blksize=1468 tsize=0}."""
    try:
        packet = parsePacket(data)
    except MalformedPacket as e:
        opcode = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        name = _OPCODES.get(opcode, f"opcode {opcode}") if opcode is not None else "runt"
        return f"malformed {name} ({len(data)} bytes: {e})"
    if isinstance(packet, ReadRequest | WriteRequest):
        kind = "RRQ" if isinstance(packet, ReadRequest) else "WRQ"
        name = packet.filename.decode("utf-8", "backslashreplace")
        return f"{kind} {name!r} {packet.mode}{_options(packet.options)}"[:300]
    if isinstance(packet, Data):
        return f"DATA {packet.block} {len(packet.data)} bytes"
    if isinstance(packet, Ack):
        return f"ACK {packet.block}"
    if isinstance(packet, Error):
        return f"ERROR {packet.code} {packet.message!r}"
    return f"OACK{_options(packet.options)}"


def logLine(outgoing: bool, local: Address, remote: Address, data: bytes) -> str:
    """C{local > remote SUMMARY} (sent) or C{local < remote SUMMARY} (received)."""
    arrow = ">" if outgoing else "<"
    return f"{_show(local)} {arrow} {_show(remote)} {describe(data)}"


def _show(address: Address) -> str:
    host = address[0] or "*"
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


@implementer(IWireTracer)
class TextTracer:
    """Each datagram as a L{logLine}, given to C{emit} (a log, a terminal's stderr)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit

    def datagram(self, outgoing: bool, local: Address, remote: Address, data: bytes) -> None:
        self._emit(logLine(outgoing, local, remote, data))


_log = Logger(namespace="twisted_udpsuite.tftp.trace")


def logTracer() -> TextTracer:
    """C{twistd udpsuite tftp --trace}: each datagram as an info line of the log."""
    return TextTracer(lambda line: _log.info("{line}", line=line, tftpTrace=True))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipPacket(source: Address, destination: Address, payload: bytes, ident: int = 0) -> bytes:
    """C{payload} in a UDP datagram in an IPv4 or IPv6 packet, checksums computed."""
    src = ipaddress.ip_address(hostOf(source[0]) or "0.0.0.0")
    dst = ipaddress.ip_address(hostOf(destination[0]) or "0.0.0.0")
    if src.version != dst.version:  # a wildcard of the other family
        src = ipaddress.ip_address("::" if dst.version == 6 else "0.0.0.0")
    length = _UDP.size + len(payload)
    if dst.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", length, 17)
    udp = _UDP.pack(source[1], destination[1], length, 0) + payload
    udpChecksum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udpChecksum) + udp[8:]
    if dst.version == 6:
        return _IPV6.pack(6 << 28, length, 17, 64, src.packed, dst.packed) + udp
    header = _IPV4.pack(
        0x45, 0, 20 + length, ident & 0xFFFF, 0x4000, 64, 17, 0, src.packed, dst.packed
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


@implementer(IWireTracer)
class PcapWriter:
    """
    A classic pcap file (microsecond timestamps, C{LINKTYPE_RAW}); each record is flushed,
    so the file can be read while the server runs. L{close} when done.

    @param clock: gives the timestamps (C{seconds()}).
    """

    def __init__(self, out: IO[bytes], clock: IReactorTime) -> None:
        self._out = out
        self._clock = clock
        self._ident = 0
        out.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        out.flush()

    def datagram(self, outgoing: bool, local: Address, remote: Address, data: bytes) -> None:
        if self._out.closed:
            return
        self._ident += 1
        source, destination = (local, remote) if outgoing else (remote, local)
        packet = ipPacket(source, destination, data, self._ident)
        now = self._clock.seconds()
        seconds = int(now)
        header = _RECORD_HEADER.pack(seconds, int((now - seconds) * 1e6), len(packet), len(packet))
        self._out.write(header + packet)
        self._out.flush()

    def close(self) -> None:
        self._out.close()


@implementer(IWireTracer)
class TracerGroup:
    """Several tracers as one (C{--trace} and C{--pcap} together)."""

    def __init__(self, tracers: Sequence[IWireTracer]) -> None:
        self.tracers = list(tracers)

    def datagram(self, outgoing: bool, local: Address, remote: Address, data: bytes) -> None:
        for tracer in self.tracers:
            tracer.datagram(outgoing, local, remote, data)

    def close(self) -> None:
        for tracer in self.tracers:
            close = getattr(tracer, "close", None)
            if close is not None:
                close()


def _wire(packet: OutgoingPacket) -> bytes:
    """A packet as sent: bytes, or the engine's (header, payload) pair."""
    return b"".join(packet) if isinstance(packet, tuple) else bytes(packet)


def traceProtocol(
    protocol: DatagramProtocol, tracer: IWireTracer, send: str, peer: Address | None = None
) -> None:
    """
    Report what C{protocol} receives (its C{datagramReceived}) and sends (its method
    C{send}, called with C{(packet)} to C{peer}, or with C{(packet, address)}) to
    C{tracer}, by wrapping both on the instance. The local address is read from the
    protocol's transport at each datagram.
    """
    received = protocol.datagramReceived
    sender = getattr(protocol, send)

    def local() -> Address:
        transport = protocol.transport
        assert transport is not None  # a protocol receives and sends only while listening
        host = transport.getHost()
        return (host.host, host.port)

    def datagramReceived(datagram: bytes, addr: Address) -> None:
        tracer.datagram(False, local(), (addr[0], addr[1]), datagram)
        received(datagram, addr)

    def tracedTo(packet: OutgoingPacket, addr: Address) -> None:
        tracer.datagram(True, local(), (addr[0], addr[1]), _wire(packet))
        sender(packet, addr)

    def tracedToPeer(packet: OutgoingPacket) -> None:
        assert peer is not None
        tracer.datagram(True, local(), peer, _wire(packet))
        sender(packet)

    setattr(protocol, "datagramReceived", datagramReceived)  # noqa: B010 (on the instance)
    setattr(protocol, send, tracedTo if peer is None else tracedToPeer)
