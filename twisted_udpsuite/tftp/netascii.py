# -*- test-case-name: tests.tftp.test_netascii -*-
"""
Streaming netascii translation for TFTP's C{netascii} mode (RFC 1350 via RFC 764).

The local side is POSIX: lines end with LF. On the wire a line ends with CR LF and a bare CR
is sent as CR NUL. Both directions work on a stream cut into arbitrary chunks (a CR may end
one DATA block and its LF or NUL start the next), and use C{bytes.replace} rather than a
Python loop per byte.

Encoding maps each byte on its own, so it needs no state; decoding holds back a CR that ends a
chunk until the next chunk shows what follows it. Encoding then decoding gives back any input
exactly, because every CR on the wire is then followed by LF or NUL.

L{NetasciiReader} and L{NetasciiWriter} put the two between a transfer engine
(L{twisted_udpsuite.tftp.transfer}) and the local file, for the client and the server alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from twisted_udpsuite.tftp.transfer import BlockReader, BlockWriter

__all__ = [
    "NetasciiDecoder",
    "NetasciiEncoder",
    "NetasciiReader",
    "NetasciiWriter",
    "decodeNetascii",
    "encodeNetascii",
    "netasciiSize",
]


def encodeNetascii(data: bytes) -> bytes:
    """
    Translate local bytes to netascii: CR becomes CR NUL, then LF becomes CR LF. The order
    matters: the CR added for an LF must not get a NUL.
    """
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def decodeNetascii(data: bytes) -> bytes:
    """
    Translate a complete netascii stream to local bytes: CR LF becomes LF, CR NUL becomes CR.
    A CR followed by anything else (or by nothing) is kept, and the byte after it is decoded
    as usual: peers do send bare CRs, and dropping data would be worse than keeping it.
    """
    if b"\r" not in data:
        return data
    # The two patterns never overlap (LF and NUL are not CR), and removing the CR of a CR LF
    # cannot make a new CR NUL, so two passes equal one left-to-right scan.
    return data.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")


def netasciiSize(chunks: Iterable[bytes]) -> int:
    """
    The size of local data once encoded to netascii, for C{tsize} (RFC 2349 counts the bytes
    on the wire). Every CR and every LF gains one byte.
    """
    return sum(len(chunk) + chunk.count(b"\r") + chunk.count(b"\n") for chunk in chunks)


class NetasciiEncoder:
    """
    Local to wire, chunk by chunk. Stateless (each byte is translated alone), but shaped like
    L{NetasciiDecoder} so a session can treat both directions the same way.
    """

    __slots__ = ()

    def encode(self, chunk: bytes) -> bytes:
        """Translate the next chunk of local data."""
        return encodeNetascii(chunk)

    def flush(self) -> bytes:
        """End of the data: nothing is ever held back, so nothing is left."""
        return b""


class NetasciiDecoder:
    """
    Wire to local, chunk by chunk. A CR at the end of a chunk is held until the next chunk (or
    L{flush}) says whether it was CR LF, CR NUL or a bare CR.
    """

    __slots__ = ("_pendingCR",)

    def __init__(self) -> None:
        self._pendingCR = False

    def decode(self, chunk: bytes) -> bytes:
        """Translate the next chunk of wire data; may return less than a whole line."""
        if self._pendingCR:
            chunk = b"\r" + chunk
            self._pendingCR = False
        if b"\r" not in chunk:
            return chunk
        if chunk.endswith(b"\r"):
            self._pendingCR = True
            chunk = chunk[:-1]
        return decodeNetascii(chunk)

    def flush(self) -> bytes:
        """End of the data: a CR still held back was a bare CR, so it is kept."""
        if self._pendingCR:
            self._pendingCR = False
            return b"\r"
        return b""


class NetasciiReader:
    """
    Wraps a local reader so that a L{twisted_udpsuite.tftp.transfer.Sender} reads netascii
    wire bytes.
    """

    def __init__(self, reader: BlockReader) -> None:
        self._reader = reader
        self._encoder = NetasciiEncoder()
        self._pending = b""
        self._eof = False

    def read(self, n: int) -> bytes | Deferred[bytes]:
        """Up to C{n} wire bytes; C{b""} at the end."""
        while len(self._pending) < n and not self._eof:
            chunk = self._reader.read(max(n, 8192))
            if isinstance(chunk, Deferred):
                return chunk.addCallback(self._got, n)
            self._absorb(chunk)
        return self._take(n)

    def _absorb(self, chunk: bytes) -> None:
        if chunk:
            self._pending += self._encoder.encode(chunk)
        else:
            self._eof = True

    def _got(self, chunk: bytes, n: int) -> bytes | Deferred[bytes]:
        self._absorb(chunk)
        return self.read(n)

    def _take(self, n: int) -> bytes:
        block, self._pending = self._pending[:n], self._pending[n:]
        return block

    def close(self) -> None:
        """Close the wrapped reader if it can be closed."""
        close = getattr(self._reader, "close", None)
        if close is not None:
            close()


class NetasciiWriter:
    """Wraps a local writer so that a
    L{twisted_udpsuite.tftp.transfer.Receiver} can give it netascii wire bytes."""

    def __init__(self, writer: BlockWriter) -> None:
        self._writer = writer
        self._decoder = NetasciiDecoder()

    def write(self, data: bytes) -> None | Deferred[None]:
        """Decode and pass on (a CR ending the chunk waits for the next one)."""
        local = self._decoder.decode(data)
        if local:
            return self._writer.write(local)
        return None

    def flush(self) -> None | Deferred[None]:
        """The end of the data: pass on a held-back bare CR."""
        rest = self._decoder.flush()
        if rest:
            return self._writer.write(rest)
        return None
