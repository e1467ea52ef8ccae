"""Tests for the discovery wire format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.discovery import wire
from twisted_udpsuite.discovery.wire import Kind, MalformedMessage, Message, ServiceEntry, parse

INSTANCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"

services = st.builds(
    ServiceEntry,
    st.text(min_size=0, max_size=8).filter(lambda t: len(t.encode()) <= wire.MAX_SERVICE_NAME),
    st.sampled_from(["udp", "tcp"]),
    st.integers(0, 65535),
)
names = st.text(max_size=20).filter(lambda t: len(t.encode()) <= wire.MAX_NAME)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(list(Kind)))
    return Message(
        kind=kind,
        instance=draw(st.binary(min_size=8, max_size=8)),
        requestId=draw(st.integers(0, 2**32 - 1)),
        maxDelay=draw(st.integers(0, 5000)) / 1000 if kind is Kind.PROBE else 0.0,
        lifetime=draw(st.integers(0, 65535)) if kind is Kind.ANNOUNCE else 0,
        name=draw(names),
        services=tuple(draw(st.lists(services, max_size=5))),
        known=tuple(draw(st.lists(st.binary(min_size=8, max_size=8), max_size=4))),
        truncated=draw(st.booleans()),
        padTo=draw(st.integers(0, 600)),
    )


@given(messages())
def test_roundTrip(message: Message) -> None:
    """Every message survives encoding and parsing; padding reaches the asked size."""
    data = message.toBytes()
    assert parse(data) == message
    assert len(data) >= message.padTo


@given(st.binary(max_size=300))
def test_fuzzRaisesOnlyMalformed(data: bytes) -> None:
    """Random bytes parse or raise MalformedMessage, nothing else."""
    try:
        parse(data)
    except MalformedMessage:
        pass


@given(messages(), st.integers(0, 400), st.integers(0, 255))
def test_fuzzMutatedMessages(message: Message, position: int, value: int) -> None:
    """A real message with one byte changed or cut short raises only MalformedMessage."""
    data = bytearray(message.toBytes())
    if data:
        data[position % len(data)] = value
    for candidate in (bytes(data), bytes(data[: position % (len(data) + 1)])):
        try:
            parse(candidate)
        except MalformedMessage:
            pass


def test_probeBytes() -> None:
    """The documented example probe (PROTOCOL.md), byte for byte."""
    probe = Message(Kind.PROBE, INSTANCE, requestId=0x2A, maxDelay=1.0, padTo=256)
    data = probe.toBytes()
    assert data[:22] == (
        b"UDPD" + b"\x01\x01\x00\x00" + b"\x03\xe8" + b"\x00\x00\x00\x2a" + INSTANCE
    )
    assert data[22:24] == b"\xff\xe8" and data[24:] == bytes(232)
    assert len(data) == 256


def test_answerBytes() -> None:
    """The documented example answer (PROTOCOL.md), byte for byte."""
    answer = Message(
        Kind.ANSWER, INSTANCE, 0x2A, name="alpha", services=(ServiceEntry("echo", "udp", 7007),)
    )
    assert answer.toBytes() == (
        b"UDPD\x01\x02\x00\x00\x00\x00\x00\x00\x00\x2a"
        + INSTANCE
        + b"\x01\x05alpha"
        + b"\x02\x07\x11\x1b\x5fecho"
    )


def test_limitTruncatesServices() -> None:
    """With a size limit, services that do not fit are dropped and the flag says so."""
    many = tuple(ServiceEntry(f"service{i}", "tcp", 1000 + i) for i in range(40))
    answer = Message(Kind.ANSWER, INSTANCE, 1, name="n" * 64, services=many)
    data = answer.toBytes(limit=256)
    assert len(data) <= 256
    parsed = parse(data)
    assert parsed.truncated and 0 < len(parsed.services) < 40
    assert parsed.services == many[: len(parsed.services)]
    assert not parse(answer.toBytes()).truncated


def test_longNameClippedOnCharacterBoundary() -> None:
    """A name longer than 64 bytes is cut without splitting a UTF-8 character."""
    data = Message(Kind.ANSWER, INSTANCE, name="é" * 40).toBytes()
    assert parse(data).name == "é" * 32


def test_unknownFieldsAreSkipped() -> None:
    """A later version's extra TLV is ignored, not an error."""
    data = Message(Kind.ANSWER, INSTANCE, 3, name="x").toBytes() + b"\x42\x03abc"
    assert parse(data).name == "x"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "too short"),
        (b"XXXX" + bytes(18), "magic"),
        (b"UDPD\x02\x01" + bytes(16), "version"),
        (b"UDPD\x01\x09" + bytes(16), "kind"),
        (b"UDPD\x01\x02" + bytes(16) + b"\x01", "field header"),
        (b"UDPD\x01\x02" + bytes(16) + b"\x01\x05ab", "past the end"),
        (b"UDPD\x01\x02" + bytes(16) + b"\x01\x02\xff\xfe", "UTF-8"),
        (b"UDPD\x01\x02" + bytes(16) + b"\x02\x02\x11\x00", "too short"),
        (b"UDPD\x01\x02" + bytes(16) + b"\x02\x03\x01\x00\x07", "protocol"),
        (b"UDPD\x01\x01" + bytes(16) + b"\x03\x03abc", "multiple of 8"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    """Each kind of damage is one MalformedMessage that says what is wrong."""
    with pytest.raises(MalformedMessage, match=reason):
        parse(data)
