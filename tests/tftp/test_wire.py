"""Tests for L{twisted_udpsuite.tftp.wire}: the TFTP packet codec."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    ErrorCode,
    MalformedPacket,
    Opcode,
    OptionAck,
    ReadRequest,
    WriteRequest,
    encodeAck,
    encodeData,
    parsePacket,
    wrapBlock,
)

PACKET_TYPES = (ReadRequest, WriteRequest, Data, Ack, Error, OptionAck)


def _op(opcode: int) -> bytes:
    return struct.pack("!H", opcode)


def _rrq(body: bytes) -> bytes:
    return _op(1) + body


def _malformed(data: bytes) -> str:
    with pytest.raises(MalformedPacket) as info:
        parsePacket(data)
    return str(info.value)


# Strategies ---------------------------------------------------------------------------------

filenames = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\x00", b"\x01"))
asciiNoNul = st.characters(min_codepoint=1, max_codepoint=127)
latin1NoNul = st.characters(min_codepoint=1, max_codepoint=255)
modes = st.text(asciiNoNul, min_size=1, max_size=12)
optionDicts = st.lists(
    st.tuples(st.text(asciiNoNul, min_size=1, max_size=12), st.text(latin1NoNul, max_size=12)),
    max_size=6,
    unique_by=lambda pair: pair[0].lower(),
).map(dict)
blocks = st.integers(0, 0xFFFF)

packets = st.one_of(
    st.builds(ReadRequest, filenames, modes, optionDicts),
    st.builds(WriteRequest, filenames, modes, optionDicts),
    st.builds(Data, blocks, st.binary(max_size=600)),
    st.builds(Ack, blocks),
    st.builds(Error, blocks, st.text(max_size=80).map(lambda t: t.replace("\x00", ""))),
    st.builds(OptionAck, optionDicts.filter(bool)),
)


# Properties ---------------------------------------------------------------------------------


@given(packets)
def test_roundTrip(packet: object) -> None:
    """Every packet type survives C{toBytes} then L{parsePacket} unchanged."""
    assert parsePacket(packet.toBytes()) == packet  # type: ignore[attr-defined]


@given(st.binary(max_size=200))
def test_fuzzAnyBytes(data: bytes) -> None:
    """Any datagram gives a packet or L{MalformedPacket}, never another exception."""
    try:
        packet = parsePacket(data)
    except MalformedPacket:
        return
    assert isinstance(packet, PACKET_TYPES)


@given(st.integers(0, 8), st.binary(max_size=120))
def test_fuzzKnownOpcodes(opcode: int, body: bytes) -> None:
    """
    Random bodies behind real opcodes reach every branch of the parser: it still only ever
    raises L{MalformedPacket}, and whatever it accepts re-encodes to a packet that parses equal.
    """
    try:
        packet = parsePacket(_op(opcode) + body)
    except MalformedPacket:
        return
    assert parsePacket(packet.toBytes()) == packet


@given(
    st.lists(
        st.one_of(
            st.just(b""),
            st.sampled_from([b"blksize", b"BLKSIZE", b"tsize", b"octet", b"\xff", b"512"]),
            st.binary(max_size=4),
        ),
        max_size=8,
    ),
    st.sampled_from([1, 2, 6]),
    st.booleans(),
)
def test_fuzzFieldLists(fields: list[bytes], opcode: int, terminate: bool) -> None:
    """NUL-separated field soups (the shape of RRQ/WRQ/OACK) only raise L{MalformedPacket}."""
    body = b"\x00".join(fields) + (b"\x00" if terminate else b"")
    try:
        parsePacket(_op(opcode) + body)
    except MalformedPacket:
        pass


@given(blocks, st.binary(max_size=600))
def test_fastEncodersMatchClasses(block: int, payload: bytes) -> None:
    """L{encodeData} and L{encodeAck} produce the same bytes as L{Data} and L{Ack}."""
    assert encodeData(block, payload) == Data(block, payload).toBytes()
    assert encodeAck(block) == Ack(block).toBytes()


# Short datagrams and opcodes ----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x03", b"\x00\x04\x00", b"\x00\x01a"])
def test_tooShort(data: bytes) -> None:
    """Datagrams of 0 to 3 bytes are malformed: no TFTP packet is that short."""
    assert "too short" in _malformed(data)


@pytest.mark.parametrize("opcode", [0, 7, 8, 0xFFFF])
def test_unknownOpcode(opcode: int) -> None:
    """Opcodes outside 1..6 are malformed and named in the message."""
    assert f"unknown opcode {opcode}" in _malformed(_op(opcode) + b"\x00\x00abc\x00")


def test_opcodeEnum() -> None:
    """L{Opcode} has RFC 1350's five opcodes plus OACK from RFC 2347."""
    assert [int(op) for op in Opcode] == [1, 2, 3, 4, 5, 6]


def test_errorCodeEnum() -> None:
    """L{ErrorCode} has the nine codes of RFC 1350 and RFC 2347."""
    assert [int(code) for code in ErrorCode] == list(range(9))
    assert ErrorCode.OPTION_REFUSED == 8
    assert ErrorCode.UNKNOWN_TRANSFER_ID == 5


# DATA and ACK -------------------------------------------------------------------------------


def test_dataParse() -> None:
    """DATA carries a 16-bit block number and the rest of the datagram as payload."""
    assert parsePacket(b"\x00\x03\xff\xfehello") == Data(0xFFFE, b"hello")


def test_dataEmptyPayload() -> None:
    """A 4-byte DATA is a valid, empty (final) block."""
    assert parsePacket(b"\x00\x03\x00\x07") == Data(7, b"")


def test_dataBlockZero() -> None:
    """Block 0 is valid on the wire (block numbers wrap to 0 after 65535)."""
    assert parsePacket(encodeData(0, b"x")) == Data(0, b"x")


def test_dataLargePayload() -> None:
    """The codec does not cap the payload; the session checks it against blksize."""
    payload = bytes(65464)
    assert parsePacket(encodeData(1, payload)) == Data(1, payload)


def test_ackParse() -> None:
    """ACK carries just a block number."""
    assert parsePacket(b"\x00\x04\x01\x02") == Ack(0x0102)


def test_ackTrailingBytesIgnored() -> None:
    """Bytes after a 4-byte ACK are ignored: it is a fixed-size packet."""
    assert parsePacket(b"\x00\x04\x00\x05junk") == Ack(5)


@pytest.mark.parametrize("block", [-1, 0x10000])
def test_blockOutOfRange(block: int) -> None:
    """L{Data} and L{Ack} refuse block numbers that do not fit 16 bits."""
    with pytest.raises(ValueError):
        Data(block, b"")
    with pytest.raises(ValueError):
        Ack(block)


def test_dataToBytes() -> None:
    """L{Data.toBytes} is the opcode, the block number and the payload."""
    assert Data(258, b"ab").toBytes() == b"\x00\x03\x01\x02ab"


# RRQ / WRQ ----------------------------------------------------------------------------------


def test_readRequest() -> None:
    """An RRQ gives the filename as bytes and the mode as lower-case text."""
    packet = parsePacket(_rrq(b"boot/pxelinux.0\x00octet\x00"))
    assert packet == ReadRequest(b"boot/pxelinux.0", "octet", {})
    assert isinstance(packet, ReadRequest)


def test_writeRequest() -> None:
    """A WRQ parses to L{WriteRequest}, which is not equal to a read of the same file."""
    packet = parsePacket(_op(2) + b"up.bin\x00octet\x00")
    assert packet == WriteRequest(b"up.bin", "octet")
    assert packet != ReadRequest(b"up.bin", "octet")


@pytest.mark.parametrize(
    ("raw", "mode"), [(b"OCTET", "octet"), (b"NetAscii", "netascii"), (b"mail", "mail")]
)
def test_modeLowerCased(raw: bytes, mode: str) -> None:
    """
    Modes are case-insensitive, so they are lower-cased; any non-empty ASCII mode (even
    C{mail}) parses, because the session decides which modes it serves.
    """
    packet = parsePacket(_rrq(b"f\x00" + raw + b"\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.mode == mode


def test_modeLowerCasedByConstructor() -> None:
    """A request built in code compares equal to the same request parsed from the wire."""
    assert ReadRequest(b"f", "OCTET", {"BLKSIZE": "512"}) == ReadRequest(
        b"f", "octet", {"blksize": "512"}
    )


def test_nonAsciiFilename() -> None:
    """Non-ASCII and non-UTF-8 filenames are kept as raw bytes (tftpy dies on them)."""
    name = "ü/\u00e9".encode() + b"\xff\xfe"
    packet = parsePacket(_rrq(name + b"\x00octet\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.filename == name


@pytest.mark.parametrize("size", [255, 4096])
def test_longFilename(size: int) -> None:
    """Long filenames parse; length policy is not the codec's business."""
    packet = parsePacket(_rrq(b"a" * size + b"\x00octet\x00"))
    assert isinstance(packet, ReadRequest)
    assert len(packet.filename) == size


def test_missingFilenameNul() -> None:
    """An RRQ whose filename is not NUL-terminated is malformed."""
    assert "filename is not NUL-terminated" in _malformed(_rrq(b"file"))


def test_missingModeNul() -> None:
    """An RRQ whose mode is not NUL-terminated is malformed."""
    assert "mode is not NUL-terminated" in _malformed(_rrq(b"file\x00octet"))


def test_missingMode() -> None:
    """An RRQ with a filename and nothing else is malformed."""
    assert "mode is missing" in _malformed(_rrq(b"file\x00"))


def test_emptyFilename() -> None:
    """An empty filename is malformed."""
    assert "empty filename" in _malformed(_rrq(b"\x00octet\x00"))


def test_emptyMode() -> None:
    """An empty mode is malformed."""
    assert "empty mode" in _malformed(_rrq(b"file\x00\x00"))


def test_nonAsciiMode() -> None:
    """A mode that is not ASCII is malformed."""
    assert "not ASCII" in _malformed(_rrq(b"file\x00oct\xe9t\x00"))


def test_trailingGarbage() -> None:
    """Bytes after the last NUL that are not NUL-terminated make a request malformed."""
    assert "not NUL-terminated" in _malformed(_rrq(b"file\x00octet\x00garbage"))
    assert "not NUL-terminated" in _malformed(_rrq(b"file\x00octet\x00blksize\x00512\x00x"))


def test_trailingNulPadding() -> None:
    """Trailing NUL padding after a request is ignored (some clients pad; tftp-hpa accepts)."""
    assert parsePacket(_rrq(b"file\x00octet\x00\x00\x00\x00")) == ReadRequest(b"file", "octet")
    assert parsePacket(_rrq(b"file\x00octet\x00tsize\x000\x00\x00\x00")) == ReadRequest(
        b"file", "octet", {"tsize": "0"}
    )


def test_dataAfterPadding() -> None:
    """An empty option name followed by more options is malformed, not padding."""
    assert "empty option name" in _malformed(_rrq(b"file\x00octet\x00\x00blksize\x00512\x00"))


def test_requestConstructorValidates() -> None:
    """Requests that could not be encoded unambiguously cannot be built."""
    for args in [(b"", "octet"), (b"a\x00b", "octet"), (b"f", ""), (b"f", "oct\xe9t")]:
        with pytest.raises(ValueError):
            ReadRequest(*args)
    with pytest.raises(ValueError):
        ReadRequest(b"f", "octet", {"blksize": "1", "BLKSIZE": "2"})
    with pytest.raises(ValueError):
        ReadRequest(b"f", "octet", {"": "1"})
    with pytest.raises(ValueError):
        ReadRequest(b"f", "octet", {"x": "a\x00b"})


def test_requestHashable() -> None:
    """Requests are hashable (the options dict is left out of the hash), e.g. for dedup sets."""
    assert hash(ReadRequest(b"f", "octet", {"a": "1"})) == hash(ReadRequest(b"f", "OCTET"))


# Options ------------------------------------------------------------------------------------


def test_options() -> None:
    """Options after the mode are name/value pairs, kept in order."""
    packet = parsePacket(
        _rrq(b"f\x00octet\x00blksize\x001428\x00tsize\x000\x00windowsize\x0016\x00")
    )
    assert isinstance(packet, ReadRequest)
    assert list(packet.options.items()) == [
        ("blksize", "1428"),
        ("tsize", "0"),
        ("windowsize", "16"),
    ]


def test_upperCaseOptionName() -> None:
    """Option names are case-insensitive (RFC 2347), so C{BLKSIZE} becomes C{blksize}."""
    packet = parsePacket(_rrq(b"f\x00octet\x00BLKSIZE\x001468\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.options == {"blksize": "1468"}


@pytest.mark.parametrize(
    "body",
    [b"blksize\x00512\x00blksize\x001024\x00", b"blksize\x00512\x00BlkSize\x00512\x00"],
)
def test_duplicateOption(body: bytes) -> None:
    """Duplicate option names (case-insensitively) are malformed: which would win is unclear."""
    assert "duplicate option 'blksize'" in _malformed(_rrq(b"f\x00octet\x00" + body))


def test_optionWithoutValue() -> None:
    """An option name with no value after it is malformed."""
    assert "has no value" in _malformed(_rrq(b"f\x00octet\x00blksize\x00"))


def test_optionEmptyValue() -> None:
    """An empty value is well-formed at the wire level; negotiation ignores it."""
    packet = parsePacket(_rrq(b"f\x00octet\x00blksize\x00\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.options == {"blksize": ""}


@pytest.mark.parametrize("value", [b"-1", b"abc", b"0512", b"99999999999999999999", b"+8", b" 512"])
def test_optionValuesKeptVerbatim(value: bytes) -> None:
    """Odd option values are kept as text for the negotiation layer to judge."""
    packet = parsePacket(_rrq(b"f\x00octet\x00blksize\x00" + value + b"\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.options == {"blksize": value.decode("ascii")}


def test_optionValueLatin1() -> None:
    """Non-ASCII option values are decoded as latin-1, so no byte is lost or refused."""
    packet = parsePacket(_rrq(b"f\x00octet\x00x-vendor\x00\xff\xe9\x00"))
    assert isinstance(packet, ReadRequest)
    assert packet.options == {"x-vendor": "\xff\xe9"}
    assert packet.toBytes().endswith(b"x-vendor\x00\xff\xe9\x00")


def test_nonAsciiOptionName() -> None:
    """A non-ASCII option name is malformed."""
    assert "not ASCII" in _malformed(_rrq(b"f\x00octet\x00bl\xffksize\x00512\x00"))


def test_manyOptions() -> None:
    """More than 16 options and requests over 512 bytes still parse (policy is the server's)."""
    body = b"".join(b"opt%d\x00%s\x00" % (i, b"v" * 20) for i in range(40))
    data = _rrq(b"f\x00octet\x00" + body)
    assert len(data) > 512
    packet = parsePacket(data)
    assert isinstance(packet, ReadRequest)
    assert len(packet.options) == 40


# OACK ---------------------------------------------------------------------------------------


def test_optionAck() -> None:
    """An OACK is a list of options with lower-cased names."""
    assert parsePacket(_op(6) + b"BLKSIZE\x001428\x00tsize\x001234\x00") == OptionAck(
        {"blksize": "1428", "tsize": "1234"}
    )


def test_optionAckEmpty() -> None:
    """An OACK with no options is malformed: a server accepting none must not send one."""
    assert "too short" in _malformed(_op(6))
    assert "no options" in _malformed(_op(6) + b"\x00\x00")
    with pytest.raises(ValueError):
        OptionAck({})


def test_optionAckMalformed() -> None:
    """OACK follows the request rules: duplicates, missing values and garbage are malformed."""
    assert "duplicate" in _malformed(_op(6) + b"tsize\x001\x00TSIZE\x002\x00")
    assert "has no value" in _malformed(_op(6) + b"tsize\x00")
    assert "not NUL-terminated" in _malformed(_op(6) + b"tsize\x001")


def test_optionAckToBytes() -> None:
    """L{OptionAck.toBytes} is the opcode then each name and value NUL-terminated."""
    assert OptionAck({"blksize": "1428"}).toBytes() == b"\x00\x06blksize\x001428\x00"


# ERROR --------------------------------------------------------------------------------------


def test_error() -> None:
    """An ERROR gives an L{ErrorCode} and its message."""
    packet = parsePacket(b"\x00\x05\x00\x01File not found\x00")
    assert packet == Error(ErrorCode.FILE_NOT_FOUND, "File not found")
    assert isinstance(packet, Error)
    assert packet.code is ErrorCode.FILE_NOT_FOUND


def test_errorWithoutNul() -> None:
    """An ERROR whose message lacks the final NUL is accepted."""
    assert parsePacket(b"\x00\x05\x00\x08refused") == Error(8, "refused")


def test_errorWithoutMessage() -> None:
    """An ERROR with no message at all (with or without the NUL) is accepted."""
    assert parsePacket(b"\x00\x05\x00\x00\x00") == Error(0, "")
    assert parsePacket(b"\x00\x05\x00\x00") == Error(0, "")


@pytest.mark.parametrize("code", [9, 100, 0xFFFF])
def test_errorUnknownCode(code: int) -> None:
    """Unknown error codes are kept as plain ints, not refused."""
    packet = parsePacket(_op(5) + struct.pack("!H", code) + b"vendor\x00")
    assert isinstance(packet, Error)
    assert packet.code == code
    assert not isinstance(packet.code, ErrorCode)


def test_errorMessageInvalidUtf8() -> None:
    """Invalid UTF-8 in a message becomes replacement characters instead of an exception."""
    packet = parsePacket(b"\x00\x05\x00\x02bad \xff\xfe\x00")
    assert packet == Error(2, "bad \ufffd\ufffd")


def test_errorTrailingAfterNul() -> None:
    """Bytes after the message's NUL are ignored."""
    assert parsePacket(b"\x00\x05\x00\x04msg\x00junk") == Error(4, "msg")


def test_errorToBytes() -> None:
    """L{Error.toBytes} encodes the message as UTF-8 and terminates it."""
    assert Error(ErrorCode.DISK_FULL, "plein ü").toBytes() == (
        b"\x00\x05\x00\x03plein \xc3\xbc\x00"
    )


def test_errorConstructorValidates() -> None:
    """Codes must fit 16 bits and messages must not contain NUL."""
    for args in [(-1, ""), (0x10000, ""), (0, "a\x00b")]:
        with pytest.raises(ValueError):
            Error(*args)


@pytest.mark.parametrize(
    "absolute, rollover, wire",
    [
        (1, 0, 1),
        (65535, 0, 65535),
        (65536, 0, 0),
        (65537, 0, 1),
        (65535, 1, 65535),
        (65536, 1, 1),
        (65536 + 65534, 1, 65535),
        (65536 + 65535, 1, 1),
    ],
)
def test_wrapBlock(absolute: int, rollover: int, wire: int) -> None:
    """After 65535 block numbers go on from the rollover: 0 (most peers) or 1."""
    assert wrapBlock(absolute, rollover) == wire
