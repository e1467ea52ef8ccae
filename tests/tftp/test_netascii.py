"""Tests for L{twisted_udpsuite.tftp.netascii}: streaming netascii translation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.tftp.netascii import (
    NetasciiDecoder,
    NetasciiEncoder,
    decodeNetascii,
    encodeNetascii,
    netasciiSize,
)

# Bytes rich in the three interesting values, so CR/LF/NUL runs are common.
streams = st.lists(st.sampled_from(b"\r\n\0a\xff"), max_size=200).map(bytes) | st.binary(
    max_size=200
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut C{data} at the given offsets (any order, duplicates allowed)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def _encodeChunks(chunks: list[bytes]) -> bytes:
    encoder = NetasciiEncoder()
    return b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.flush()


def _decodeChunks(chunks: list[bytes]) -> bytes:
    decoder = NetasciiDecoder()
    return b"".join(decoder.decode(chunk) for chunk in chunks) + decoder.flush()


# Encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "wire"),
    [
        (b"", b""),
        (b"plain", b"plain"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"bare\rcr", b"bare\r\x00cr"),
        (b"dos\r\n", b"dos\r\x00\r\n"),
        (b"\r", b"\r\x00"),
        (b"\r\x00", b"\r\x00\x00"),
        (b"\n\n", b"\r\n\r\n"),
    ],
)
def test_encode(local: bytes, wire: bytes) -> None:
    """LF becomes CR LF and a bare CR becomes CR NUL; a local CR LF is two separate bytes."""
    assert encodeNetascii(local) == wire
    assert _encodeChunks([local]) == wire


def test_encodeCrEndsChunk() -> None:
    """A CR ending one chunk still gets its NUL (FreeBSD tftpd PR 178055 dropped it)."""
    encoder = NetasciiEncoder()
    assert encoder.encode(b"abc\r") == b"abc\r\x00"
    assert encoder.encode(b"\ndef") == b"\r\ndef"
    assert encoder.flush() == b""


# Decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "local"),
    [
        (b"", b""),
        (b"a\r\nb\r\n", b"a\nb\n"),
        (b"bare\r\x00cr", b"bare\rcr"),
        (b"\r\x00\x00", b"\r\x00"),
        (b"x\ry", b"x\ry"),
        (b"\r\r\n", b"\r\n"),
        (b"\r\r\x00", b"\r\r"),
        (b"end\r", b"end\r"),
        (b"lone\nlf", b"lone\nlf"),
    ],
)
def test_decode(wire: bytes, local: bytes) -> None:
    """
    CR LF becomes LF and CR NUL becomes CR. Lenient cases: a CR followed by anything else is
    kept and the next byte decoded normally; a CR at the very end is kept; a bare LF is kept.
    """
    assert decodeNetascii(wire) == local
    assert _decodeChunks([wire]) == local


def test_decodeCrSplitFromLf() -> None:
    """A CR ending one block pairs with the LF starting the next."""
    decoder = NetasciiDecoder()
    assert decoder.decode(b"line\r") == b"line"
    assert decoder.decode(b"\nnext") == b"\nnext"
    assert decoder.flush() == b""


def test_decodeCrSplitFromNul() -> None:
    """CR | NUL NUL across a block boundary decodes to CR NUL."""
    decoder = NetasciiDecoder()
    assert decoder.decode(b"a\r") == b"a"
    assert decoder.decode(b"\x00\x00b") == b"\r\x00b"
    assert decoder.flush() == b""


def test_decodeCrThenEmptyChunk() -> None:
    """An empty chunk (a final 0-byte DATA) keeps the CR held until there is more or a flush."""
    decoder = NetasciiDecoder()
    assert decoder.decode(b"\r") == b""
    assert decoder.decode(b"") == b""
    assert decoder.flush() == b"\r"
    assert decoder.flush() == b""


def test_decodeCrCrAcrossBoundary() -> None:
    """CR | CR LF: the first CR is bare and kept, the second pairs with the LF."""
    decoder = NetasciiDecoder()
    assert decoder.decode(b"\r") == b""
    assert decoder.decode(b"\r") == b"\r"
    assert decoder.decode(b"\n") == b"\n"
    assert decoder.flush() == b""


def test_decodeFastPathReturnsSameObject() -> None:
    """A chunk without CR is returned untouched, without copying."""
    chunk = b"no carriage returns here\n" * 100
    assert NetasciiDecoder().decode(chunk) is chunk


# Properties ---------------------------------------------------------------------------------


@given(streams)
def test_encodeDecodeIdentity(data: bytes) -> None:
    """
    Decoding what was encoded gives back any input, including CR NUL, CR LF and a final CR,
    because every CR on the wire is then followed by LF or NUL.
    """
    assert decodeNetascii(encodeNetascii(data)) == data


@given(streams, st.lists(st.integers(0, 1000), max_size=10))
def test_encodeStreaming(data: bytes, cuts: list[int]) -> None:
    """Encoding in arbitrary chunks gives the same bytes as encoding in one go."""
    assert _encodeChunks(_split(data, cuts)) == encodeNetascii(data)


@given(streams, st.lists(st.integers(0, 1000), max_size=10))
def test_decodeStreaming(data: bytes, cuts: list[int]) -> None:
    """Decoding any wire bytes (even invalid netascii) in arbitrary chunks equals one go."""
    assert _decodeChunks(_split(data, cuts)) == decodeNetascii(data)


@given(streams, st.lists(st.integers(0, 1000), max_size=10))
def test_streamingRoundTrip(data: bytes, cuts: list[int]) -> None:
    """Encoding in some chunks and decoding in others gives back the input."""
    wire = _encodeChunks(_split(data, cuts))
    assert _decodeChunks(_split(wire, [c * 7 for c in cuts])) == data


@given(streams, st.lists(st.integers(0, 1000), max_size=10))
def test_netasciiSize(data: bytes, cuts: list[int]) -> None:
    """L{netasciiSize} is the length of the encoded data, however the input is chunked."""
    assert netasciiSize(_split(data, cuts)) == len(encodeNetascii(data))


def test_netasciiSizeExamples() -> None:
    """Each CR and LF adds one byte; an empty file is 0 bytes."""
    assert netasciiSize([]) == 0
    assert netasciiSize([b""]) == 0
    assert netasciiSize([b"a\nb", b"\r"]) == 6
