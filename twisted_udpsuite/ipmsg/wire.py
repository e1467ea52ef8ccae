"""
The IP Messenger (IPMsg) wire format: pure, no Twisted.

A datagram is an ASCII-ish header and NUL-separated sections::

    Ver:PacketNo:User:Host:Command:Body[\\0Extra[\\0Extra...]]

C{Command} is a decimal uint32: its low 8 bits are the mode (L{Mode}), the high
24 the option flags.  Text is UTF-8 when the packet carries L{UTF8OPT};
otherwise it is the sender's local code page, in practice GBK/GB18030 on the
Chinese LANs where FeiQ and iptux live (L{decodePacket} guesses: strict UTF-8
first, GB18030 for the rest).  Entry packets (BR_ENTRY, ANSENTRY, BR_ABSENCE)
are never UTF8OPT; draft 10 of the protocol adds, after the group, a section
C{\\nUN:user\\nHN:host\\nNN:nick\\nGN:group\\n} that is always UTF-8
(L{entryExtension}, L{EntryInfo}).  File offers put an attachment list in the
first extra section (L{Attachment}, L{parseAttachments}).

Every parser here raises L{MalformedPacket} and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "ABSENCEOPT",
    "AUTORETOPT",
    "BROADCASTOPT",
    "CAPUTF8OPT",
    "DIALUPOPT",
    "ENCRYPTOPT",
    "FILEATTACHOPT",
    "MAX_DATAGRAM",
    "MULTICASTOPT",
    "NOADDLISTOPT",
    "PASSWORDOPT",
    "READCHECKOPT",
    "RETRYOPT",
    "SECRETOPT",
    "SENDCHECKOPT",
    "SERVEROPT",
    "UTF8OPT",
    "Attachment",
    "EntryInfo",
    "FileRequest",
    "MalformedPacket",
    "Mode",
    "Packet",
    "PacketNumbers",
    "decodePacket",
    "encodeAttachments",
    "entryExtension",
    "isVersion",
    "parseAttachments",
    "parseEntryExtension",
    "parseFileRequest",
    "splitPacket",
]

#: The largest datagram we send, and the most iptux reads (its C{MAX_SOCKLEN}).
MAX_DATAGRAM = 8192
#: The largest user or host name IP Messenger for Windows keeps (C{MAX_NAMEBUF}).
MAX_NAME = 80
#: Where a header must end: its five colons come within this many bytes.
_MAX_HEADER = 512
#: FeiQ and iptux's candidate code page for packets without UTF8OPT.
LEGACY = "gb18030"


class MalformedPacket(ValueError):
    """The bytes are not an IPMsg packet (or not one we take)."""


class Mode(IntEnum):
    """The command's low 8 bits (C{GET_MODE})."""

    NOOPERATION = 0x00
    BR_ENTRY = 0x01
    BR_EXIT = 0x02
    ANSENTRY = 0x03
    BR_ABSENCE = 0x04
    BR_ISGETLIST = 0x10
    OKGETLIST = 0x11
    GETLIST = 0x12
    ANSLIST = 0x13
    SENDMSG = 0x20
    RECVMSG = 0x21
    READMSG = 0x30
    DELMSG = 0x31
    ANSREADMSG = 0x32
    GETINFO = 0x40
    SENDINFO = 0x41
    GETABSENCEINFO = 0x50
    SENDABSENCEINFO = 0x51
    GETFILEDATA = 0x60
    RELEASEFILES = 0x61
    GETDIRFILES = 0x62
    GETPUBKEY = 0x72
    ANSPUBKEY = 0x73
    IPTUX_SENDMSG = 0xFB  # iptux's group chat
    IPTUX_ASKSHARED = 0xFF  # iptux: "send me your shared files' offer"


# Options of every command.
ABSENCEOPT = 0x100
SERVEROPT = 0x200
DIALUPOPT = 0x10000
FILEATTACHOPT = 0x200000
ENCRYPTOPT = 0x400000
UTF8OPT = 0x800000
CAPUTF8OPT = 0x1000000
# Options of SENDMSG (the same bits mean other things on entry commands).
SENDCHECKOPT = 0x100
SECRETOPT = 0x200
BROADCASTOPT = 0x400
MULTICASTOPT = 0x800
AUTORETOPT = 0x2000
RETRYOPT = 0x4000
PASSWORDOPT = 0x8000
NOADDLISTOPT = 0x80000
READCHECKOPT = 0x100000

#: The modes whose packets are entries (never UTF8OPT; Extra = group [+ extension]).
ENTRY_MODES = frozenset({Mode.BR_ENTRY, Mode.ANSENTRY, Mode.BR_ABSENCE})

# "1", or "1" followed by anything that does not continue the number:
# "1_lbt4_10#128#...", "1_iptux 0.8.3", "1@shiyeline".
_VERSION = re.compile(r"1([^0-9:].*)?", re.DOTALL)


def isVersion(text: str) -> bool:
    """
    Whether C{text} is a version field we take: C{1} alone or followed by anything that
    does not continue the number (C{^1([^0-9:].*)?$}), as IP Messenger, FeiQ and iptux
    write it.
    """
    return _VERSION.fullmatch(text) is not None


@dataclass(frozen=True)
class Packet:
    """
    One IPMsg packet, decoded to text.

    @ivar version: the raw version field (C{"1"}, C{"1_lbt4_10#..."}, C{"1_iptux 0.8.3"}).
    @ivar extra: the sections after the body, each decoded on its own (an entry
        extension, which starts with C{\\n}, is always UTF-8).
    @ivar encoding: what the header and body were (or will be) encoded with.
    """

    version: str
    packetNo: int
    user: str
    host: str
    command: int
    body: str = ""
    extra: tuple[str, ...] = ()
    encoding: str = "utf-8"

    @property
    def mode(self) -> int:
        return self.command & 0xFF

    @property
    def options(self) -> int:
        return self.command & 0xFFFFFF00

    def has(self, option: int) -> bool:
        return bool(self.command & option)

    def toBytes(self) -> bytes:
        """
        The datagram.  The header and body are encoded with L{encoding}, or
        UTF-8 if the command has L{UTF8OPT} (as every reader decodes it);
        unencodable characters become C{?}.  An extra section that starts with
        C{\\n} (the entry extension) is UTF-8.

        @raise MalformedPacket: if a field would break the framing (a C{:} in the
            user or host, a NUL anywhere, a bad version or number).
        """
        if not isVersion(self.version) or ":" in self.version or "\0" in self.version:
            raise MalformedPacket(f"bad version field {self.version!r}")
        if not 0 <= self.packetNo < 2**64 or not 0 <= self.command < 2**32:
            raise MalformedPacket("packet number or command out of range")
        for name, value in (("user", self.user), ("host", self.host)):
            if ":" in value or "\0" in value:
                raise MalformedPacket(f"{name} {value!r} holds ':' or NUL")
        if "\0" in self.body or any("\0" in x for x in self.extra):
            raise MalformedPacket("a section holds NUL")
        head = f"{self.version}:{self.packetNo}:{self.user}:{self.host}:{self.command}:"
        encoding = "utf-8" if self.command & UTF8OPT else self.encoding
        parts = [_encode(head + self.body, encoding)]
        for section in self.extra:
            parts.append(_encode(section, "utf-8" if section.startswith("\n") else encoding))
        return b"\0".join(parts)


def _encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "replace")


@dataclass(frozen=True)
class RawPacket:
    """A packet split into its byte fields, before any decoding."""

    version: bytes
    packetNo: int
    user: bytes
    host: bytes
    command: int
    sections: tuple[bytes, ...]  # body, then the extras


def splitPacket(data: bytes) -> RawPacket:
    """
    Split a datagram into its fields.

    Splitting bytes on C{:} and NUL is safe in every encoding peers use: UTF-8,
    GBK and GB18030 never have those bytes inside a multibyte character.

    @raise MalformedPacket: if it has no full header, a bad version field, or a
        packet number or command that is not a decimal number.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedPacket("not bytes")
    data = bytes(data)
    head = data[:_MAX_HEADER]
    fields = head.split(b":", 5)
    if len(fields) < 6 or b"\0" in b":".join(fields[:5]):
        raise MalformedPacket("no complete Ver:PacketNo:User:Host:Command: header")
    version, number, user, host, command = fields[:5]
    offset = sum(len(f) + 1 for f in fields[:5])
    try:
        versionText = version.decode("ascii")
    except UnicodeDecodeError:
        versionText = ""
    if not isVersion(versionText) or len(version) > 128:
        raise MalformedPacket(f"not an IPMsg version field: {version[:40]!r}")
    packetNo = _decimal(number, "packet number", 2**64)
    commandNo = _decimal(command, "command", 2**32)
    return RawPacket(version, packetNo, user, host, commandNo, tuple(data[offset:].split(b"\0")))


def _decimal(text: bytes, what: str, limit: int) -> int:
    if not text.isdigit() or len(text) > 20:
        raise MalformedPacket(f"{what} {text[:24]!r} is not a decimal number")
    value = int(text)
    if value >= limit:
        raise MalformedPacket(f"{what} {value} out of range")
    return value


def guessEncoding(data: bytes) -> str:
    """C{utf-8} if C{data} is valid UTF-8 (plain ASCII is), else L{LEGACY}."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return LEGACY
    return "utf-8"


def decodePacket(data: bytes, encoding: str | None = None) -> Packet:
    """
    Parse and decode a datagram.

    With L{UTF8OPT} the packet is UTF-8.  Otherwise it is C{encoding} (the peer's
    known code page), or, when that is C{None}, a guess: strict UTF-8 if the
    text is valid UTF-8, else GB18030 (a superset of FeiQ's GBK).  Undecodable
    bytes become U+FFFD.

    @raise MalformedPacket: see L{splitPacket}.
    """
    raw = splitPacket(data)
    legacyParts = [raw.user, raw.host, raw.sections[0]]
    legacyParts += [s for s in raw.sections[1:] if not s.startswith(b"\n")]
    if raw.command & UTF8OPT:
        chosen = "utf-8"
    elif encoding is not None:
        chosen = encoding
    else:
        chosen = guessEncoding(b"".join(legacyParts))

    def text(section: bytes) -> str:
        codec = "utf-8" if section.startswith(b"\n") else chosen
        return section.decode(codec, "replace")

    return Packet(
        version=raw.version.decode("ascii"),
        packetNo=raw.packetNo,
        user=raw.user.decode(chosen, "replace"),
        host=raw.host.decode(chosen, "replace"),
        command=raw.command,
        body=raw.sections[0].decode(chosen, "replace"),
        extra=tuple(text(s) for s in raw.sections[1:]),
        encoding=chosen,
    )


# Entries: nick, group and the draft-10 extension


@dataclass(frozen=True)
class EntryInfo:
    """Who an entry packet says its sender is, extension fields preferred."""

    nick: str
    group: str
    user: str
    host: str

    @classmethod
    def fromPacket(cls, packet: Packet) -> EntryInfo:
        group = packet.extra[0] if packet.extra else ""
        fields: dict[str, str] = {}
        for section in packet.extra[1:]:
            if section.startswith("\n"):
                fields = parseEntryExtension(section)
                break
        return cls(
            nick=fields.get("NN") or packet.body or packet.user,
            group=fields.get("GN", group),
            user=fields.get("UN") or packet.user,
            host=fields.get("HN") or packet.host,
        )


def entryExtension(user: str, host: str, nick: str, group: str) -> str:
    """The draft-10 UTF-8 section C{\\nUN:..\\nHN:..\\nNN:..\\nGN:..\\n} (no NULs inside)."""
    values = [("UN", user), ("HN", host), ("NN", nick), ("GN", group)]
    return "\n" + "".join(f"{k}:{v.replace(chr(10), ' ').replace(chr(0), '')}\n" for k, v in values)


def parseEntryExtension(section: str) -> dict[str, str]:
    """The C{KEY:value} lines of an entry extension (unknown keys kept, bad lines skipped)."""
    fields: dict[str, str] = {}
    for line in section.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key and len(fields) < 32:
            fields[key] = value
    return fields


# Attachments


@dataclass(frozen=True)
class Attachment:
    """
    One file of an offer: C{fileID:name:size:mtime:attr[:x=v...]:}.

    The file ID is decimal (as IP Messenger and iptux write it); size, mtime
    and attr are hexadecimal.  A C{:} in a name is written C{::}.
    """

    fileId: int
    name: str
    size: int
    mtime: int = 0
    attr: int = 1
    extended: tuple[str, ...] = field(default=())

    #: attr's low byte: what the entry is.
    REGULAR = 1
    DIRECTORY = 2

    @property
    def kind(self) -> int:
        return self.attr & 0xFF

    def toText(self) -> str:
        if "\0" in self.name or "\a" in self.name or not self.name:
            raise MalformedPacket(f"file name {self.name!r} cannot be offered")
        if any(":" in x or "\a" in x or "\0" in x for x in self.extended):
            raise MalformedPacket("extended attributes hold ':', BEL or NUL")
        name = self.name.replace(":", "::")
        tail = "".join(f"{x}:" for x in self.extended)
        return f"{self.fileId}:{name}:{self.size:x}:{self.mtime:x}:{self.attr:x}:{tail}"


def encodeAttachments(attachments: Iterable[Attachment]) -> str:
    """The attachment list, entries separated by BEL (C{\\a})."""
    return "".join(a.toText() + "\a" for a in attachments)


#: At most this many files are read from one offer.
MAX_ATTACHMENTS = 256


def parseAttachments(text: str) -> list[Attachment]:
    """
    Parse an attachment list.  Tolerates iptux's C{\\a:} separators and an
    empty tail; a file ID may be written in decimal (IP Messenger, iptux).

    @raise MalformedPacket: on any entry that does not parse.
    """
    found: list[Attachment] = []
    for chunk in text.split("\a"):
        chunk = chunk.lstrip(":")
        if not chunk.strip(" \0"):
            continue
        if len(found) >= MAX_ATTACHMENTS:
            raise MalformedPacket(f"more than {MAX_ATTACHMENTS} files in one offer")
        found.append(_parseAttachment(chunk))
    return found


def _parseAttachment(chunk: str) -> Attachment:
    fileId, sep, rest = chunk.partition(":")
    if not sep:
        raise MalformedPacket(f"attachment {chunk[:40]!r}: no fields")
    # The name runs to the first ':' that is not part of '::'.
    name = []
    i = 0
    while True:
        j = rest.find(":", i)
        if j < 0:
            raise MalformedPacket(f"attachment {chunk[:40]!r}: the name does not end")
        if rest.startswith("::", j):
            name.append(rest[i:j] + ":")
            i = j + 2
            continue
        name.append(rest[i:j])
        rest = rest[j + 1 :]
        break
    fields = rest.split(":")
    if fields and fields[-1] == "":
        fields.pop()
    if len(fields) < 3:
        raise MalformedPacket(f"attachment {chunk[:40]!r}: needs size, mtime and attr")
    return Attachment(
        fileId=_number(fileId, 10, "file ID"),
        name="".join(name),
        size=_number(fields[0], 16, "size"),
        mtime=_number(fields[1], 16, "mtime"),
        attr=_number(fields[2], 16, "attr"),
        extended=tuple(fields[3:]),
    )


_DIGITS = {10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF")}


def _number(text: str, base: int, what: str) -> int:
    text = text.strip()
    if not text or len(text) > 16 or not set(text) <= _DIGITS[base]:
        raise MalformedPacket(f"{what} {text[:20]!r} is not a base-{base} number")
    return int(text, base)


# GETFILEDATA


@dataclass(frozen=True)
class FileRequest:
    """A GETFILEDATA body: C{packetNo:fileId:offset}, all hexadecimal."""

    packetNo: int
    fileId: int
    offset: int = 0

    def toText(self) -> str:
        return f"{self.packetNo:x}:{self.fileId:x}:{self.offset:x}"


def parseFileRequest(body: str) -> FileRequest:
    """
    Parse a GETFILEDATA body (a trailing C{:} is allowed).

    @raise MalformedPacket: unless it is three hexadecimal numbers.
    """
    fields = body.strip("\0").split(":")
    if fields and fields[-1] == "":
        fields.pop()
    if len(fields) != 3:
        raise MalformedPacket(f"GETFILEDATA body {body[:40]!r}: expected packet:file:offset")
    packetNo, fileId, offset = (_number(f, 16, "GETFILEDATA field") for f in fields)
    return FileRequest(packetNo, fileId, offset)


# Packet numbers


class PacketNumbers:
    """
    Packet numbers that keep growing across restarts, as IP Messenger makes
    them: the current time in seconds, or one more than the last, whichever is
    larger.  iptux drops a peer's packets numbered at or below the last it saw,
    so numbers that restart at 1 would be ignored until it forgot us.

    @param seconds: the wall clock (a reactor's C{seconds}).
    """

    def __init__(self, seconds: Callable[[], float]) -> None:
        self._seconds = seconds
        self._last = -1

    def next(self) -> int:
        self._last = max(int(self._seconds()), self._last + 1) % 2**32
        return self._last
