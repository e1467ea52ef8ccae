"""
The file server's framing (see C{PROTOCOL.md} next to this module); pure, no Twisted.

Requests are one LF-terminated line each; responses are a status line, C{key value}
field lines and an empty line, then exactly C{size} body bytes, then (successful FETCH
only) one trailer line carrying the sha256 of the whole file.  Both parsers are
incremental: bytes may arrive split anywhere, and anything that does not fit raises
L{MalformedFrame}, the only error they raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEADER",
    "MAX_REQUEST",
    "BodyData",
    "Fetch",
    "ListDir",
    "MalformedFrame",
    "Request",
    "RequestParser",
    "ResponseEnd",
    "ResponseHead",
    "ResponseParser",
    "Stat",
    "Status",
    "Trailer",
    "encodeRequest",
    "encodeResponseHead",
    "encodeTrailer",
    "parseRequest",
]

#: Longest request line, LF included: a 4095-byte path plus the verb and numbers.
MAX_REQUEST = 4096 + 128
#: Longest response head (status line, fields and the empty line).
MAX_HEADER = 8192
#: Longest trailer line.
MAX_TRAILER = 128

_VERSION = re.compile(rb"[0-9a-f]{1,64}")
_NUMBER = re.compile(rb"0|[1-9][0-9]{0,18}")
_FIELD_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_HEX64 = re.compile(rb"[0-9a-f]{64}")


class MalformedFrame(ValueError):
    """
    Bytes that are not a valid frame; the connection cannot be resynchronised.

    @ivar status: the status a server answers with (400, or 413 for an over-long header).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Status:
    """Response status codes (HTTP-like numbers, so they read familiar in logs)."""

    OK = 200
    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_FOUND = 404
    TIMEOUT = 408
    CONFLICT = 409  # a directory where a file is wanted, or the reverse
    TOO_LARGE = 413
    BAD_OFFSET = 416
    TOO_MANY_FROM_YOU = 429
    INTERNAL = 500
    NOT_IMPLEMENTED = 501
    BUSY = 503


@dataclass(frozen=True)
class Fetch:
    """
    C{FETCH offset version path}: the file's bytes from C{offset}.

    @ivar version: the version the client already holds the first C{offset} bytes of
        (C{None}: unknown).  If the file's version differs, the server restarts at 0.
    """

    path: str
    offset: int = 0
    version: str | None = None


@dataclass(frozen=True)
class ListDir:
    """C{LIST path}: the entries of a directory."""

    path: str


@dataclass(frozen=True)
class Stat:
    """C{STAT path}: kind, size, mtime and version of one path."""

    path: str


Request = Fetch | ListDir | Stat


def _checkPath(path: str) -> bytes:
    raw = path.encode("utf-8")
    if b"\n" in raw or b"\r" in raw:
        raise ValueError("a path cannot contain CR or LF")
    return raw


def encodeRequest(request: Request) -> bytes:
    """The request line for C{request}."""
    if isinstance(request, Fetch):
        if request.offset < 0:
            raise ValueError("negative offset")
        version = request.version if request.version is not None else "-"
        if version != "-" and not _VERSION.fullmatch(version.encode("ascii")):
            raise ValueError(f"bad version {version!r}")
        line = b"FETCH %d %s %s\n" % (
            request.offset,
            version.encode("ascii"),
            _checkPath(request.path),
        )
    elif isinstance(request, ListDir):
        line = b"LIST " + _checkPath(request.path) + b"\n"
    else:
        line = b"STAT " + _checkPath(request.path) + b"\n"
    if len(line) > MAX_REQUEST:
        raise ValueError("request line too long")
    return line


def parseRequest(line: bytes) -> Request:
    """Parse one request line (without its LF)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    verb, sep, rest = line.partition(b" ")
    if not sep:
        raise MalformedFrame(f"no argument after {verb[:16]!r}")
    if verb == b"FETCH":
        parts = rest.split(b" ", 2)
        if len(parts) != 3:
            raise MalformedFrame("FETCH needs: offset version path")
        offset, version, path = parts
        if not _NUMBER.fullmatch(offset):
            raise MalformedFrame("bad FETCH offset")
        if version != b"-" and not _VERSION.fullmatch(version):
            raise MalformedFrame("bad FETCH version")
        return Fetch(
            _decodePath(path), int(offset), None if version == b"-" else version.decode("ascii")
        )
    if verb == b"LIST":
        return ListDir(_decodePath(rest))
    if verb == b"STAT":
        return Stat(_decodePath(rest))
    raise MalformedFrame(f"unknown request {verb[:16]!r}", 501)


def _decodePath(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("path is not UTF-8") from None
    if "\r" in text or "\n" in text:
        raise MalformedFrame("CR or LF in path")
    return text


class RequestParser:
    """
    Split a byte stream into requests.  After a L{MalformedFrame} it stays broken.

    @ivar pending: bytes of an incomplete request held so far (for header timeouts).
    """

    def __init__(self, maxLine: int = MAX_REQUEST) -> None:
        self._buffer = b""
        self._maxLine = maxLine
        self._broken: MalformedFrame | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Request]:
        """The requests completed by C{data}, in order."""
        if self._broken is not None:
            raise self._broken
        buffer = self._buffer + data if self._buffer else data
        requests: list[Request] = []
        start = 0
        try:
            while True:
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                if end + 1 - start > self._maxLine:
                    raise MalformedFrame("request line too long", 413)
                requests.append(parseRequest(buffer[start:end]))
                start = end + 1
            rest = buffer[start:]
            if len(rest) >= self._maxLine:
                raise MalformedFrame("request line too long", 413)
        except MalformedFrame as e:
            self._broken = e
            self._buffer = b""
            e.requests = requests  # type: ignore[attr-defined]
            raise
        self._buffer = rest
        return requests


@dataclass(frozen=True)
class ResponseHead:
    """
    A response's status line and fields.

    Known fields: C{size} (body length), C{offset} (where a FETCH body starts in the
    file), C{version}, C{kind} (C{file}/C{dir}/C{other}), C{mtime} (ns since the epoch).
    """

    status: int
    message: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.fields.get("size", "0"))

    @property
    def offset(self) -> int:
        return int(self.fields.get("offset", "0"))

    @property
    def version(self) -> str | None:
        return self.fields.get("version")

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


def encodeResponseHead(status: int, message: str, **fields: str | int) -> bytes:
    """Status line, fields (C{size} defaults to 0) and the blank line."""
    if not 100 <= status <= 999:
        raise ValueError("status must have 3 digits")
    clean = message.replace("\r", " ").replace("\n", " ")
    lines = [f"{status} {clean}"]
    fields.setdefault("size", 0)
    for name, value in fields.items():
        key = name.replace("_", "-")
        text = str(value)
        if not _FIELD_NAME.fullmatch(key) or "\n" in text or "\r" in text:
            raise ValueError(f"bad field {key!r}")
        lines.append(f"{key} {text}")
    head = ("\n".join(lines) + "\n\n").encode("utf-8")
    if len(head) > MAX_HEADER:
        raise ValueError("response head too long")
    return head


@dataclass(frozen=True)
class Trailer:
    """After a FETCH body: the sha256 of the whole file, or C{changed=True}."""

    sha256: str | None
    changed: bool = False


def encodeTrailer(sha256: str | None) -> bytes:
    """C{sha256 <hex>}, or C{changed} when the file changed while it was read."""
    if sha256 is None:
        return b"changed\n"
    if not _HEX64.fullmatch(sha256.encode("ascii")):
        raise ValueError("not a sha256 hex digest")
    return b"sha256 " + sha256.encode("ascii") + b"\n"


@dataclass(frozen=True)
class BodyData:
    """A slice of a response body, as it arrived."""

    data: bytes


@dataclass(frozen=True)
class ResponseEnd:
    """The response is complete; C{trailer} for a successful FETCH."""

    trailer: Trailer | None = None


ResponseEvent = ResponseHead | BodyData | ResponseEnd


class ResponseParser:
    """
    Split a byte stream into response events, never holding a body in memory.

    The caller says, with L{expect}, whether each coming response answers a FETCH
    (only those carry a trailer), in request order.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._expect: list[bool] = []
        self._state = "head"
        self._remaining = 0
        self._trailer = False
        self._broken: MalformedFrame | None = None

    def expect(self, isFetch: bool) -> None:
        """One more response is due; C{isFetch}: it answers a FETCH."""
        self._expect.append(isFetch)

    @property
    def bodyRemaining(self) -> int:
        """Body bytes of the current response still to come (0 outside a body)."""
        return self._remaining if self._state == "body" and self._broken is None else 0

    def bodyTaken(self, length: int) -> list[ResponseEvent]:
        """
        C{length} body bytes were read from the stream by the caller, not through
        L{feed} (the client splices big bodies straight to the file): account for them.

        @return: the events this causes (L{ResponseEnd} if the body is done and no
            trailer follows).
        """
        if not 0 < length <= self.bodyRemaining:
            raise ValueError(f"{length} body bytes taken, {self.bodyRemaining} due")
        self._remaining -= length
        if self._remaining or self._trailer:
            if not self._remaining:
                self._state = "trailer"
            return []
        self._state = "head"
        return [ResponseEnd()]

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self._broken is not None:
            raise self._broken
        try:
            return list(self._feed(data))
        except MalformedFrame as e:
            self._broken = e
            raise

    def _feed(self, data: bytes) -> Iterator[ResponseEvent]:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        view = memoryview(buffer)
        pos = 0
        while pos < len(buffer) or (self._state == "body" and self._remaining == 0):
            if self._state == "head":
                end = buffer.find(b"\n\n", pos)
                if end < 0:
                    if len(buffer) - pos > MAX_HEADER:
                        raise MalformedFrame("response head too long", 413)
                    self._buffer = buffer[pos:]
                    return
                if end + 2 - pos > MAX_HEADER:
                    raise MalformedFrame("response head too long", 413)
                if not self._expect:
                    raise MalformedFrame("response without a request")
                head = _parseHead(buffer[pos:end])
                pos = end + 2
                isFetch = self._expect.pop(0)
                yield head
                self._trailer = isFetch and head.ok
                self._remaining = head.size
                self._state = "body"
            elif self._state == "body":
                take = min(self._remaining, len(buffer) - pos)
                if take:
                    if pos == 0 and take == len(buffer):
                        yield BodyData(buffer)  # the common case: no copy
                    else:
                        yield BodyData(bytes(view[pos : pos + take]))
                    pos += take
                    self._remaining -= take
                if self._remaining == 0:
                    if self._trailer:
                        self._state = "trailer"
                    else:
                        self._state = "head"
                        yield ResponseEnd()
            else:
                end = buffer.find(b"\n", pos)
                if end < 0:
                    if len(buffer) - pos > MAX_TRAILER:
                        raise MalformedFrame("trailer too long")
                    self._buffer = buffer[pos:]
                    return
                line = buffer[pos:end]
                pos = end + 1
                if line == b"changed":
                    trailer = Trailer(None, changed=True)
                elif line.startswith(b"sha256 ") and _HEX64.fullmatch(line[7:]):
                    trailer = Trailer(line[7:].decode("ascii"))
                else:
                    raise MalformedFrame("bad trailer")
                self._state = "head"
                yield ResponseEnd(trailer)


def _parseHead(raw: bytes) -> ResponseHead:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFrame("response head is not UTF-8") from None
    lines = text.split("\n")
    status, _, message = lines[0].partition(" ")
    if len(status) != 3 or not status.isdigit() or not status.isascii():
        raise MalformedFrame("bad status line")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(" ")
        if not sep or not _FIELD_NAME.fullmatch(name):
            raise MalformedFrame("bad field line")
        fields[name] = value
    for name in ("size", "offset", "mtime"):
        if name in fields and not _NUMBER.fullmatch(fields[name].encode("ascii", "replace")):
            raise MalformedFrame(f"bad {name}")
    return ResponseHead(int(status), message, fields)
