"""
The discovery wire format (version 1), pure: no Twisted, no I/O.

Every datagram is a fixed 22-byte header followed by TLV fields; see
C{PROTOCOL.md} next to this module for the layout and byte examples.
L{parse} turns bytes into a L{Message} or raises L{MalformedMessage} (and
nothing else); L{Message.toBytes} does the reverse.  Unknown TLV types are
skipped so that later versions can add fields without breaking this one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_DELAY",
    "MAX_NAME",
    "PROBE_MIN_SIZE",
    "VERSION",
    "Kind",
    "MalformedMessage",
    "Message",
    "ServiceEntry",
    "parse",
]

MAGIC = b"UDPD"
VERSION = 1
_HEADER = struct.Struct("!4sBBBBH I 8s")
HEADER_SIZE = _HEADER.size  # 22

#: Probes shorter than this are not answered; the discoverer pads to it, so an
#: answer (never longer than its probe) has room for a name and some services.
PROBE_MIN_SIZE = 256
#: The largest answer window a probe may ask for, in seconds (SSDP caps MX at 5).
MAX_DELAY = 5.0
#: Longest name, in UTF-8 bytes.
MAX_NAME = 64
#: Longest service name, in UTF-8 bytes.
MAX_SERVICE_NAME = 32
INSTANCE_SIZE = 8
#: At most this many known instances go in one probe (about 1 KiB).
MAX_KNOWN = 128

FLAG_TRUNCATED = 0x01

_T_NAME = 1
_T_SERVICE = 2
_T_KNOWN = 3
_T_PAD = 0xFF

_PROTOCOLS = {"udp": 17, "tcp": 6}
_PROTOCOL_NAMES = {v: k for k, v in _PROTOCOLS.items()}


class MalformedMessage(ValueError):
    """The datagram is not a discovery message this version understands."""


class Kind(IntEnum):
    """What a message is for."""

    PROBE = 1  # "who is there?" (broadcast/multicast by a discoverer)
    ANSWER = 2  # "I am" (unicast by a responder to the prober)
    ANNOUNCE = 3  # "I am here, for `lifetime` seconds" (broadcast, periodic)
    GOODBYE = 4  # "I am leaving" (broadcast, on stop)


@dataclass(frozen=True)
class ServiceEntry:
    """One service a responder offers: C{echo} on C{udp} port 7007."""

    name: str
    protocol: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}/{self.protocol}:{self.port}"

    def _encode(self) -> bytes:
        return (
            struct.pack("!BH", _PROTOCOLS[self.protocol], self.port)
            + self.name.encode("utf-8")[:MAX_SERVICE_NAME]
        )


@dataclass(frozen=True)
class Message:
    """
    One discovery message.

    @ivar instance: the sender's random 8-byte id, fixed for its lifetime;
        it filters a node's own probes and merges a multi-NIC node's answers.
    @ivar requestId: chosen by the prober, echoed in answers.
    @ivar maxDelay: (probes) answer within this many seconds, at random.
    @ivar lifetime: (announces) forget me after this many seconds of silence.
    @ivar known: (probes) instances already heard, which need not answer.
    @ivar truncated: (answers) some services did not fit.
    @ivar padTo: (encoding only) pad the datagram with PAD fields to at least
        this size.
    """

    kind: Kind
    instance: bytes
    requestId: int = 0
    maxDelay: float = 0.0
    lifetime: int = 0
    name: str = ""
    services: tuple[ServiceEntry, ...] = ()
    known: tuple[bytes, ...] = ()
    truncated: bool = False
    padTo: int = field(default=0, compare=False)

    def _timing(self) -> int:
        if self.kind is Kind.PROBE:
            return min(65535, max(0, round(self.maxDelay * 1000)))
        if self.kind is Kind.ANNOUNCE:
            return min(65535, max(0, self.lifetime))
        return 0

    def toBytes(self, limit: int | None = None) -> bytes:
        """
        Encode; with C{limit}, drop the services that would make the
        datagram longer than C{limit} bytes and set the truncated flag.
        """
        if len(self.instance) != INSTANCE_SIZE:
            raise ValueError("instance must be 8 bytes")
        fields = []
        if self.name:
            fields.append(_tlv(_T_NAME, _clip(self.name.encode("utf-8"), MAX_NAME)))
        perField = 255 // INSTANCE_SIZE
        for start in range(0, min(len(self.known), MAX_KNOWN), perField):
            chunk = self.known[start : min(start + perField, MAX_KNOWN)]
            fields.append(_tlv(_T_KNOWN, b"".join(chunk)))
        truncated = self.truncated
        size = HEADER_SIZE + sum(map(len, fields))
        for entry in self.services:
            encoded = _tlv(_T_SERVICE, entry._encode())
            if limit is not None and size + len(encoded) > limit:
                truncated = True
                break
            fields.append(encoded)
            size += len(encoded)
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            int(self.kind),
            FLAG_TRUNCATED if truncated else 0,
            0,
            self._timing(),
            self.requestId & 0xFFFFFFFF,
            self.instance,
        )
        data = header + b"".join(fields)
        missing = self.padTo - len(data)
        if missing > 0:
            data += _pad(missing)
        return data


def _clip(data: bytes, size: int) -> bytes:
    """At most C{size} bytes, cut on a UTF-8 character boundary."""
    return data[:size].decode("utf-8", "ignore").encode("utf-8")


def _tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind, len(value))) + value


def _pad(size: int) -> bytes:
    """PAD fields of C{size} bytes in all (one more when C{size} is 1)."""
    out = []
    while size > 0:
        chunk = min(max(size, 2), 257)
        if size - chunk == 1:
            chunk -= 1
        out.append(_tlv(_T_PAD, bytes(chunk - 2)))
        size -= chunk
    return b"".join(out)


def parse(data: bytes) -> Message:
    """
    Decode one datagram.

    @raise MalformedMessage: for anything that is not a version-1 message:
        short, wrong magic or version, unknown kind, a TLV running past the
        end, a bad name encoding, a bad service field.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedMessage(f"too short ({len(data)} bytes)")
    magic, version, kind, flags, _, timing, requestId, instance = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage("bad magic")
    if version != VERSION:
        raise MalformedMessage(f"unsupported version {version}")
    try:
        messageKind = Kind(kind)
    except ValueError:
        raise MalformedMessage(f"unknown kind {kind}") from None
    name = ""
    services: list[ServiceEntry] = []
    known: list[bytes] = []
    offset = HEADER_SIZE
    while offset < len(data):
        if offset + 2 > len(data):
            raise MalformedMessage("truncated field header")
        fieldType, length = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if len(value) != length:
            raise MalformedMessage("field runs past the end")
        offset += 2 + length
        if fieldType == _T_NAME:
            name = _text(value, MAX_NAME)
        elif fieldType == _T_SERVICE:
            services.append(_service(value))
        elif fieldType == _T_KNOWN:
            if length % INSTANCE_SIZE:
                raise MalformedMessage("known-instance list is not a multiple of 8")
            known.extend(value[i : i + INSTANCE_SIZE] for i in range(0, length, INSTANCE_SIZE))
    return Message(
        kind=messageKind,
        instance=instance,
        requestId=requestId,
        maxDelay=timing / 1000 if messageKind is Kind.PROBE else 0.0,
        lifetime=timing if messageKind is Kind.ANNOUNCE else 0,
        name=name,
        services=tuple(services),
        known=tuple(known),
        truncated=bool(flags & FLAG_TRUNCATED),
    )


def _text(value: bytes, limit: int) -> str:
    if len(value) > limit:
        raise MalformedMessage("text field too long")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("text field is not UTF-8") from None


def _service(value: bytes) -> ServiceEntry:
    if len(value) < 3:
        raise MalformedMessage("service field too short")
    protocol, port = struct.unpack_from("!BH", value)
    if protocol not in _PROTOCOL_NAMES:
        raise MalformedMessage(f"unknown service protocol {protocol}")
    return ServiceEntry(_text(value[3:], MAX_SERVICE_NAME), _PROTOCOL_NAMES[protocol], port)
