"""The IPMsg codec: headers, modes and options, encodings, entries, attachments, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.ipmsg import wire
from twisted_udpsuite.ipmsg.wire import (
    Attachment,
    EntryInfo,
    FileRequest,
    MalformedPacket,
    Mode,
    Packet,
    PacketNumbers,
    decodePacket,
    encodeAttachments,
    entryExtension,
    isVersion,
    parseAttachments,
    parseFileRequest,
)

# Text that survives a round trip through both encodings.
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=":\0\n\a"),
    max_size=20,
)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=60)
versions = st.sampled_from(
    ["1", "1_lbt4_10#128#001122334455#0#0#0", "1_iptux 0.8.3", "1@shiyeline"]
)


def test_feiqDatagram() -> None:
    """
    A FeiQ datagram (version C{1_lbt4_...}, command 288 = SENDMSG|SENDCHECKOPT,
    GBK text, no UTF8OPT) decodes as GBK, keeps its raw version field, and says
    it wants an ack.
    """
    data = "1_lbt4_10#128#001122334455#0#0#0:1700000000:张三:PC-01:288:你好，世界".encode("gbk")
    packet = decodePacket(data)
    assert packet.version == "1_lbt4_10#128#001122334455#0#0#0"
    assert (packet.packetNo, packet.user, packet.host) == (1700000000, "张三", "PC-01")
    assert packet.mode == Mode.SENDMSG and packet.has(wire.SENDCHECKOPT)
    assert packet.body == "你好，世界"
    assert packet.encoding == "gb18030"


def test_utf8Option() -> None:
    """With UTF8OPT the packet is UTF-8 whatever the caller's default."""
    command = Mode.SENDMSG | wire.UTF8OPT
    data = f"1:5:ユーザ:host:{command}:こんにちは".encode()
    packet = decodePacket(data, encoding="gbk")
    assert packet.body == "こんにちは" and packet.user == "ユーザ"


def test_knownEncoding() -> None:
    """A peer's known code page is used instead of the guess."""
    data = "1:5:u:h:32:привет".encode("cp1251")
    assert decodePacket(data, encoding="cp1251").body == "привет"


@pytest.mark.parametrize(
    "version, ok",
    [("1", True), ("1_lbt4_10#1", True), ("1_iptux 0.8.3", True), ("1@x", True),
     ("10", False), ("2", False), ("", False), ("12_x", False), ("x1", False)],
)  # fmt: skip
def test_versionRule(version: str, ok: bool) -> None:
    """Only C{1}, or C{1} followed by a non-digit, is a version we take."""
    assert isVersion(version) is ok


@pytest.mark.parametrize(
    "data",
    [b"", b"1:2:3:4", b"2:1:u:h:32:x", b"1:x:u:h:32:", b"1:1:u:h:-1:", b"1:1:u:h:4294967296:",
     b"1:1:u\0:h:32:", b"1:" + b"9" * 30 + b":u:h:32:"],
)  # fmt: skip
def test_malformed(data: bytes) -> None:
    """Headers that are short, numbered wrongly or of another protocol are refused."""
    with pytest.raises(MalformedPacket):
        decodePacket(data)


def test_entryExtension() -> None:
    """
    An entry's draft-10 extension is UTF-8 even when the rest is GBK, and its
    fields win over the header's.
    """
    command = Mode.BR_ENTRY | wire.CAPUTF8OPT
    legacy = f"1:7:zs:pc:{command}:张三\0研发部\0".encode("gbk")
    data = legacy + entryExtension("zhang", "pc-1", "张三丰", "研发").encode()
    packet = decodePacket(data)
    assert packet.encoding == "gb18030" and packet.body == "张三"
    assert EntryInfo.fromPacket(packet) == EntryInfo("张三丰", "研发", "zhang", "pc-1")


def test_iptuxEntry() -> None:
    """iptux's own Ext (group, icon, encoding) gives the group; the nick is the body."""
    data = b"1_iptux 0.8.3:1:tux:box:257:Tuxy\0lab\0icon-tux.png\0utf-8\0"
    info = EntryInfo.fromPacket(decodePacket(data))
    assert info == EntryInfo("Tuxy", "lab", "tux", "box")


@given(versions, st.integers(0, 2**32 - 1), names, names, st.integers(0, 2**32 - 1), texts,
       st.lists(texts, max_size=3), st.sampled_from(["utf-8", "gb18030"]))  # fmt: skip
def test_roundTrip(version, number, user, host, command, body, extra, encoding) -> None:  # type: ignore[no-untyped-def]
    """What L{Packet.toBytes} writes, L{decodePacket} reads back, in either encoding."""
    packet = Packet(version, number, user, host, command, body, tuple(extra), encoding)
    decoded = decodePacket(packet.toBytes(), encoding=encoding)
    assert decoded.body == body and decoded.extra == tuple(extra)
    assert (decoded.version, decoded.packetNo, decoded.user, decoded.host, decoded.command) == (
        version, number, user, host, command)  # fmt: skip


@given(st.binary(max_size=300), st.sampled_from([None, "utf-8", "gbk", "cp932"]))
def test_fuzzDecode(data: bytes, encoding: str | None) -> None:
    """Any bytes either decode or raise L{MalformedPacket}, nothing else."""
    try:
        decodePacket(data, encoding)
    except MalformedPacket:
        pass


@given(st.text(max_size=200))
def test_fuzzAttachments(text: str) -> None:
    """Any text either parses as an attachment list or raises L{MalformedPacket}."""
    try:
        parseAttachments(text)
    except MalformedPacket:
        pass


@given(st.text(max_size=80))
def test_fuzzFileRequest(text: str) -> None:
    """Any GETFILEDATA body either parses or raises L{MalformedPacket}."""
    try:
        parseFileRequest(text)
    except MalformedPacket:
        pass


attachments = st.builds(
    Attachment,
    st.integers(0, 2**32),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\a"), min_size=1,
            max_size=30),
    st.integers(0, 2**48),
    st.integers(0, 2**32),
    st.sampled_from([1, 2, 0x101]),
)  # fmt: skip


@given(st.lists(attachments, max_size=5))
def test_attachmentsRoundTrip(files: list[Attachment]) -> None:
    """Attachment lists round-trip, colons in names included (written C{::})."""
    assert parseAttachments(encodeAttachments(files)) == files


def test_attachmentEscaping() -> None:
    """A C{:} in a name is C{::} on the wire; hex sizes; extended attributes kept."""
    offer = Attachment(3, "a:b::c.txt", 0x1F, 0x5F5E100, 1, ("14=5f5e100",))
    assert offer.toText() == "3:a::b::::c.txt:1f:5f5e100:1:14=5f5e100:"
    assert parseAttachments(offer.toText() + "\a") == [offer]


def test_iptuxAttachments() -> None:
    """iptux writes C{...:attr:\\a:} between entries; both entries are read."""
    text = "1:notes.txt:b:65000000:1:\a:2:pic.png:400:65000000:1:\a:"
    assert [(a.fileId, a.name, a.size) for a in parseAttachments(text)] == [
        (1, "notes.txt", 11),
        (2, "pic.png", 1024),
    ]


@pytest.mark.parametrize("text", ["1:name", "x:a:1:1:1:", "1:a:1:1:", "1:a:zz:1:1:"])
def test_badAttachments(text: str) -> None:
    with pytest.raises(MalformedPacket):
        parseAttachments(text)


@given(st.integers(0, 2**32), st.integers(0, 2**32), st.integers(0, 2**63))
def test_fileRequestRoundTrip(packetNo: int, fileId: int, offset: int) -> None:
    """A GETFILEDATA body round-trips, with or without the trailing colon."""
    request = FileRequest(packetNo, fileId, offset)
    assert parseFileRequest(request.toText()) == request
    assert parseFileRequest(request.toText() + ":") == request


def test_unencodableFields() -> None:
    """A packet whose user or host holds a colon cannot be written."""
    with pytest.raises(MalformedPacket):
        Packet("1", 1, "a:b", "h", 32).toBytes()
    with pytest.raises(MalformedPacket):
        Packet("1:2", 1, "a", "h", 32).toBytes()


def test_packetNumbersGrowAcrossRestarts() -> None:
    """
    Numbers follow the clock, and never repeat within a run even when many
    are taken in one second; a restart later starts above the earlier run.
    """
    now = [1_700_000_000.5]
    first = PacketNumbers(lambda: now[0])
    taken = [first.next() for _ in range(5)]
    assert taken == list(range(1_700_000_000, 1_700_000_005))
    now[0] += 10
    assert PacketNumbers(lambda: now[0]).next() > taken[-1]
