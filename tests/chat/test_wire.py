"""The chat wire protocol: commands, replies, round trips and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.chat.wire import (
    Command,
    MalformedMessage,
    Relay,
    Reply,
    formatTime,
    isValidNick,
    parseCommand,
    parseReply,
)

nicks = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,23}\Z")


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"JOIN alice\n", Command("JOIN", "alice")),
        (b"JOIN  alice \r\n", Command("JOIN", "alice")),
        (b"MSG hello there", Command("MSG", "hello there")),
        (b"hello there\n", Command("MSG", "hello there")),
        (b"join is lower case, so a message", Command("MSG", "join is lower case, so a message")),
        (b"NICK bob", Command("NICK", "bob")),
        (b"WHO\n", Command("WHO")),
        (b"LEAVE", Command("LEAVE")),
        (b"PING      ", Command("PING")),
        (b"RESEND 4", Command("RESEND", first=4)),
        (b"RESEND 4 9\n", Command("RESEND", first=4, last=9)),
        ("MSG 你好".encode(), Command("MSG", "你好")),
    ],
)
def test_parseCommand(data: bytes, expected: Command) -> None:
    """Commands a human types into nc -u parse; unknown first words are messages."""
    assert parseCommand(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"   ",
        b"MSG",
        b"MSG   ",
        b"JOIN",
        b"JOIN two words",
        b"JOIN " + b"x" * 25,
        b"JOIN <evil>",
        b"NICK *",
        b"WHO is here",
        b"RESEND",
        b"RESEND x",
        b"RESEND 9 4",
        b"RESEND 1 2 3",
        "RESEND \u00b2".encode(),
        b"\xff\xfe hello",
    ],
)
def test_malformedCommands(data: bytes) -> None:
    """Bad arguments, empty input and invalid UTF-8 are one MalformedMessage."""
    with pytest.raises(MalformedMessage):
        parseCommand(data)


def test_nicks() -> None:
    """Nicks: word characters, '.', '-'; not starting with punctuation; at most 24."""
    assert isValidNick("alice") and isValidNick("ümit_2.0-x") and isValidNick("a" * 24)
    assert not isValidNick("") and not isValidNick("-x") and not isValidNick("a" * 25)
    assert not isValidNick("a b") and not isValidNick("a>b") and not isValidNick("*")


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"#42 12:01:03 <alice> hello", Relay(42, "12:01:03", "alice", "hello")),
        (b"#43 12:01:04 * bob joined\n", Relay(43, "12:01:04", None, "bob joined")),
        (b"#1 00:00:00 <a> <b> c", Relay(1, "00:00:00", "a", "<b> c")),
        (b"OK JOINED alice 1 42", Reply(True, "JOINED", ("alice", "1", "42"))),
        (b"OK PONG 42", Reply(True, "PONG", ("42",))),
        (b"ERR nick-taken alice", Reply(False, "nick-taken", ("alice",))),
        (b"ERR gone 1 5", Reply(False, "gone", ("1 5",))),
        (b"ERR", Reply(False, "", ())),
    ],
)
def test_parseReply(data: bytes, expected: Relay | Reply) -> None:
    """Relayed lines and OK/ERR replies parse into their parts."""
    assert parseReply(data) == expected


@pytest.mark.parametrize(
    "data", [b"", b"hello", b"#x 12:00:00 <a> b", b"#1 12:00 <a> b", b"OK", b"#1 12:00:00 a"]
)
def test_malformedReplies(data: bytes) -> None:
    """Anything but a relayed line or OK/ERR is malformed."""
    with pytest.raises(MalformedMessage):
        parseReply(data)


def test_replyNumbers() -> None:
    """Numeric arguments are checked when read."""
    assert Reply(True, "PONG", ("7",)).number(0) == 7
    with pytest.raises(MalformedMessage):
        Reply(True, "PONG", ()).number(0)
    with pytest.raises(MalformedMessage):
        Reply(True, "PONG", ("x",)).number(0)


def test_formatTime() -> None:
    """Stamps are HH:MM:SS in UTC."""
    assert formatTime(0) == "00:00:00"
    assert formatTime(3600 * 25 + 61) == "01:01:01"


@given(
    st.integers(0, 10**18 - 1),
    st.integers(0, 86399),
    st.one_of(st.none(), nicks),
    st.text().filter(lambda t: not t.endswith(("\n", "\r"))),
)
def test_relayRoundTrip(seq: int, seconds: int, nick: str | None, text: str) -> None:
    """Every relayed line parses back to itself."""
    relay = Relay(seq, formatTime(seconds), nick, text)
    assert parseReply(relay.toBytes()) == relay


@given(
    st.one_of(
        nicks.map(lambda n: Command("JOIN", n)),
        nicks.map(lambda n: Command("NICK", n)),
        st.text(min_size=1)
        .filter(lambda t: t.strip() and not t.endswith(("\n", "\r")))
        .map(lambda t: Command("MSG", t)),
        st.sampled_from([Command("WHO"), Command("LEAVE"), Command("PING")]),
        st.tuples(st.integers(0, 10**9), st.one_of(st.none(), st.integers(0, 10**9))).map(
            lambda p: Command("RESEND", first=p[0], last=None if p[1] is None else p[0] + p[1])
        ),
    )
)
def test_commandRoundTrip(command: Command) -> None:
    """Every command parses back to itself."""
    assert parseCommand(command.toBytes()) == command


@given(st.binary(max_size=300))
def test_fuzzCommands(data: bytes) -> None:
    """Any bytes are a Command or a MalformedMessage, nothing else."""
    try:
        assert isinstance(parseCommand(data), Command)
    except MalformedMessage:
        pass


@given(st.binary(max_size=300))
def test_fuzzReplies(data: bytes) -> None:
    """Any bytes are a Relay, a Reply or a MalformedMessage, nothing else."""
    try:
        assert isinstance(parseReply(data), Relay | Reply)
    except MalformedMessage:
        pass
