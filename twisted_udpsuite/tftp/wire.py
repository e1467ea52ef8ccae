# -*- test-case-name: tests.tftp.test_wire -*-
"""
TFTP packet codec (RFC 1350, with the OACK packet and options of RFC 2347).

Pure: no I/O and no Twisted. L{parsePacket} turns one datagram into a packet object or raises
L{MalformedPacket} (and nothing else); every packet class has C{toBytes()}. DATA and ACK are
the hot path of every transfer, so they are parsed first and L{encodeData} / L{encodeAck}
build them without creating objects.

Parsing policy (each rule chosen so that no input is ambiguous):
  - Datagrams shorter than 4 bytes are malformed: no TFTP packet is that short.
  - Unknown opcodes (0, 7..65535) are malformed; the caller answers ERROR 4 or drops them.
  - RRQ/WRQ/OACK are lists of NUL-terminated fields. Bytes after the last NUL that are not
    themselves NUL-terminated are malformed; trailing NUL padding is ignored (some clients pad
    their requests, and tftp-hpa accepts that too).
  - Filename: non-empty bytes, kept as bytes (it need not be ASCII or UTF-8; the path layer
    decides). Mode: non-empty ASCII, lower-cased; which modes are allowed is the session's call.
  - Option names: non-empty ASCII, lower-cased (RFC 2347: case-insensitive). Values are kept
    as C{str} decoded with latin-1, which is lossless; the negotiation layer checks them.
  - A name without a value is malformed, and so are two options with the same name (compared
    case-insensitively): RFC 2347 does not say which one would win and peers disagree, so the
    request is refused rather than guessed at.
  - An OACK must carry at least one option: a server that accepts none sends no OACK.
  - ACK: bytes after the 4-byte header are ignored (fixed-size packet; be liberal).
  - ERROR: the code is kept even when it is not one of RFC's nine; the message ends at the
    first NUL or at the end of the datagram (the NUL is often missing) and is decoded as UTF-8
    with replacement characters, so it never fails.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

__all__ = [
    "MAX_BLOCK",
    "Ack",
    "Data",
    "Error",
    "ErrorCode",
    "MalformedPacket",
    "Opcode",
    "OptionAck",
    "Packet",
    "ReadRequest",
    "WriteRequest",
    "encodeAck",
    "encodeData",
    "parsePacket",
    "wrapBlock",
]

MAX_BLOCK = 0xFFFF
"""Block numbers are 16-bit; transfers longer than this wrap around."""


def wrapBlock(absolute: int, rollover: int) -> int:
    """
    The 16-bit wire number of block C{absolute} (counted from 1 without wrapping): after
    L{MAX_BLOCK} the numbers go on from C{rollover}, 0 (most peers) or 1.
    """
    if rollover == 0 or absolute <= MAX_BLOCK:
        return absolute & MAX_BLOCK
    return (absolute - 1) % MAX_BLOCK + 1


class Opcode(IntEnum):
    """TFTP opcodes (RFC 1350 §5; OACK from RFC 2347)."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    """The error codes of RFC 1350 (0-7) and RFC 2347 (8)."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TRANSFER_ID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


class MalformedPacket(ValueError):
    """
    A datagram is not a well-formed TFTP packet. The only exception L{parsePacket} raises, so
    a protocol can catch exactly this and answer ERROR 4 (or stay silent).
    """


_HEADER = struct.Struct("!HH")
_OPCODE = struct.Struct("!H")
_pack = _HEADER.pack
_unpackFrom = _HEADER.unpack_from
_DATA = int(Opcode.DATA)
_ACK = int(Opcode.ACK)
_ERROR_CODES = {int(code): code for code in ErrorCode}


def encodeData(block: int, payload: bytes) -> bytes:
    """
    Encode a DATA packet without building a L{Data}: this runs once per block sent.

    @raise struct.error: If C{block} is outside 0..65535.
    """
    return _pack(_DATA, block) + payload


def encodeAck(block: int) -> bytes:
    """
    Encode an ACK packet without building an L{Ack}: this runs once per block received.

    @raise struct.error: If C{block} is outside 0..65535.
    """
    return _pack(_ACK, block)


def _checkBlock(block: int) -> None:
    if not 0 <= block <= MAX_BLOCK:
        raise ValueError(f"block number {block} is outside 0..{MAX_BLOCK}")


def _normalizeOptions(options: dict[str, str]) -> dict[str, str]:
    """
    Validate options for encoding and lower-case their names, so a packet built in code compares
    equal to the same packet parsed from the wire.
    """
    result: dict[str, str] = {}
    for name, value in options.items():
        if not name or not name.isascii() or "\0" in name:
            raise ValueError(f"option name {name!r} must be non-empty ASCII without NUL")
        if "\0" in value:
            raise ValueError(f"value of option {name!r} contains NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"value of option {name!r} is not latin-1") from None
        lowered = name.lower()
        if lowered in result:
            raise ValueError(f"duplicate option {lowered!r}")
        result[lowered] = value
    return result


def _encodeOptions(options: dict[str, str]) -> bytes:
    return b"".join(
        name.encode("ascii") + b"\0" + value.encode("latin-1") + b"\0"
        for name, value in options.items()
    )


@dataclass(frozen=True, slots=True)
class _Request:
    """Common shape of RRQ and WRQ (RFC 1350 §5, options from RFC 2347)."""

    opcode: ClassVar[Opcode]

    filename: bytes
    mode: str
    options: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.filename or b"\0" in self.filename:
            raise ValueError("filename must be non-empty and must not contain NUL")
        if not self.mode or not self.mode.isascii() or "\0" in self.mode:
            raise ValueError(f"mode {self.mode!r} must be non-empty ASCII without NUL")
        object.__setattr__(self, "mode", self.mode.lower())
        object.__setattr__(self, "options", _normalizeOptions(self.options))

    def toBytes(self) -> bytes:
        """Encode this request as a datagram."""
        return b"".join(
            [
                _OPCODE.pack(self.opcode),
                self.filename,
                b"\0",
                self.mode.encode("ascii"),
                b"\0",
                _encodeOptions(self.options),
            ]
        )


@dataclass(frozen=True, slots=True)
class ReadRequest(_Request):
    """RRQ: the client asks to download C{filename}."""

    opcode: ClassVar[Opcode] = Opcode.RRQ


@dataclass(frozen=True, slots=True)
class WriteRequest(_Request):
    """WRQ: the client asks to upload C{filename}."""

    opcode: ClassVar[Opcode] = Opcode.WRQ


@dataclass(frozen=True, slots=True)
class Data:
    """DATA: one block of the file; a block shorter than the block size ends the transfer."""

    block: int
    data: bytes

    def __post_init__(self) -> None:
        _checkBlock(self.block)

    def toBytes(self) -> bytes:
        """Encode this block as a datagram."""
        return _pack(_DATA, self.block) + self.data


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK: acknowledges DATA C{block} (or, with block 0, a WRQ or an OACK)."""

    block: int

    def __post_init__(self) -> None:
        _checkBlock(self.block)

    def toBytes(self) -> bytes:
        """Encode this acknowledgement as a datagram."""
        return _pack(_ACK, self.block)


@dataclass(frozen=True, slots=True)
class Error:
    """
    ERROR: ends the transfer. C{code} is an L{ErrorCode} when it is one of the nine known codes
    and a plain C{int} otherwise (peers send private codes; they are kept, not refused).
    """

    code: int
    message: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"error code {self.code} is outside 0..65535")
        if "\0" in self.message:
            raise ValueError("error message must not contain NUL")
        object.__setattr__(self, "code", _ERROR_CODES.get(self.code, self.code))

    def toBytes(self) -> bytes:
        """Encode this error as a datagram; unencodable characters become C{?}."""
        return (
            _pack(Opcode.ERROR, self.code) + self.message.encode("utf-8", errors="replace") + b"\0"
        )


@dataclass(frozen=True, slots=True)
class OptionAck:
    """OACK (RFC 2347): the options the server accepted, with the values it chose."""

    options: dict[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("an OACK must carry at least one option")
        object.__setattr__(self, "options", _normalizeOptions(self.options))

    def toBytes(self) -> bytes:
        """Encode this option acknowledgement as a datagram."""
        return _OPCODE.pack(Opcode.OACK) + _encodeOptions(self.options)


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck
"""Any TFTP packet L{parsePacket} can return."""


def _parseOptions(fields: list[bytes], what: str) -> dict[str, str]:
    """
    Parse C{name, value, name, value, ...} fields. An empty name starts NUL padding, which must
    run to the end of the packet.
    """
    options: dict[str, str] = {}
    count = len(fields)
    index = 0
    while index < count:
        rawName = fields[index]
        if not rawName:
            if any(fields[index:]):
                raise MalformedPacket(f"{what}: empty option name")
            break
        if index + 1 >= count:
            raise MalformedPacket(f"{what}: option {rawName!r} has no value")
        try:
            name = rawName.decode("ascii").lower()
        except UnicodeDecodeError:
            raise MalformedPacket(f"{what}: option name {rawName!r} is not ASCII") from None
        if name in options:
            raise MalformedPacket(f"{what}: duplicate option {name!r}")
        options[name] = fields[index + 1].decode("latin-1")
        index += 2
    return options


def _splitFields(body: bytes, what: str, names: tuple[str, ...]) -> list[bytes]:
    """Split NUL-terminated fields, rejecting bytes after the last NUL."""
    if not body.endswith(b"\0"):
        fields = body.split(b"\0")
        position = len(fields) - 1
        name = names[position] if position < len(names) else "option list"
        raise MalformedPacket(f"{what}: {name} is not NUL-terminated")
    return body[:-1].split(b"\0")


def _parseRequest(data: bytes, opcode: int) -> ReadRequest | WriteRequest:
    what = "RRQ" if opcode == Opcode.RRQ else "WRQ"
    fields = _splitFields(data[2:], what, ("filename", "mode"))
    if len(fields) < 2:
        raise MalformedPacket(f"{what}: mode is missing")
    filename, rawMode = fields[0], fields[1]
    if not filename:
        raise MalformedPacket(f"{what}: empty filename")
    if not rawMode:
        raise MalformedPacket(f"{what}: empty mode")
    try:
        mode = rawMode.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what}: mode {rawMode!r} is not ASCII") from None
    options = _parseOptions(fields[2:], what)
    if opcode == Opcode.RRQ:
        return ReadRequest(filename, mode, options)
    return WriteRequest(filename, mode, options)


def parsePacket(data: bytes) -> Packet:
    """
    Parse one datagram.

    @raise MalformedPacket: For anything that is not a well-formed packet (see the module
        docstring for the exact policy); never any other exception.
    """
    if len(data) < 4:
        raise MalformedPacket(f"datagram of {len(data)} bytes is too short for TFTP")
    opcode, number = _unpackFrom(data)
    # Hot path first: DATA and ACK are nearly every packet of a transfer.
    if opcode == _DATA:
        return Data(number, data[4:])
    if opcode == _ACK:
        return Ack(number)
    if opcode == Opcode.RRQ or opcode == Opcode.WRQ:
        return _parseRequest(data, opcode)
    if opcode == Opcode.ERROR:
        end = data.find(b"\0", 4)
        raw = data[4:] if end < 0 else data[4:end]
        return Error(number, raw.decode("utf-8", errors="replace"))
    if opcode == Opcode.OACK:
        fields = _splitFields(data[2:], "OACK", ())
        options = _parseOptions(fields, "OACK")
        if not options:
            raise MalformedPacket("OACK: no options")
        return OptionAck(options)
    raise MalformedPacket(f"unknown opcode {opcode}")
