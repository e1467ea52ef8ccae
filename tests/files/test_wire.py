"""The file server's framing: requests, responses, trailers, in any split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.files.wire import (
    MAX_REQUEST,
    BodyData,
    Fetch,
    ListDir,
    MalformedFrame,
    RequestParser,
    ResponseEnd,
    ResponseHead,
    ResponseParser,
    Stat,
    Trailer,
    encodeRequest,
    encodeResponseHead,
    encodeTrailer,
    parseRequest,
)

REQUESTS = [
    Fetch("a/b c.txt", 0, None),
    Fetch("big", 12345, "0123456789abcdef"),
    ListDir(""),
    ListDir("dir/sub"),
    Stat("ünï/cödé"),
]


def test_requestBytes() -> None:
    """The documented byte forms (PROTOCOL.md)."""
    assert encodeRequest(Fetch("a b", 0)) == b"FETCH 0 - a b\n"
    assert encodeRequest(Fetch("x", 7, "ab12")) == b"FETCH 7 ab12 x\n"
    assert encodeRequest(ListDir("")) == b"LIST \n"
    assert encodeRequest(Stat("f")) == b"STAT f\n"


@pytest.mark.parametrize("request_", REQUESTS)
def test_requestRoundTrip(request_: object) -> None:
    """Every request parses back to itself."""
    assert parseRequest(encodeRequest(request_)[:-1]) == request_  # type: ignore[arg-type]


def test_requestSplitAtEveryByte() -> None:
    """Pipelined requests split at every byte boundary give the same requests."""
    stream = b"".join(encodeRequest(r) for r in REQUESTS)
    for cut in range(len(stream) + 1):
        parser = RequestParser()
        got = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert got == REQUESTS
        assert parser.pending == 0


def test_requestOneByteAtATime() -> None:
    """Fed one byte at a time, the parser still yields each request once."""
    stream = b"".join(encodeRequest(r) for r in REQUESTS)
    parser = RequestParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i : i + 1])
    assert got == REQUESTS


@pytest.mark.parametrize(
    "line,status",
    [
        (b"GET / HTTP/1.0\n", 501),
        (b"FETCH\n", 400),
        (b"FETCH x - a\n", 400),
        (b"FETCH -1 - a\n", 400),
        (b"FETCH 01 - a\n", 400),
        (b"FETCH 0 XYZ a\n", 400),
        (b"FETCH 0 -\n", 400),
        (b"LIST \xff\n", 400),
    ],
)
def test_badRequests(line: bytes, status: int) -> None:
    """Malformed lines raise MalformedFrame with the status to answer."""
    with pytest.raises(MalformedFrame) as e:
        RequestParser().feed(line)
    assert e.value.status == status


def test_requestTooLong() -> None:
    """A request line that never ends is refused (413) once over the bound."""
    parser = RequestParser()
    with pytest.raises(MalformedFrame) as e:
        for _ in range(MAX_REQUEST):
            parser.feed(b"x" * 64)
    assert e.value.status == 413


def test_parserStaysBroken() -> None:
    """After an error the stream cannot be resynchronised: every feed raises."""
    parser = RequestParser()
    with pytest.raises(MalformedFrame):
        parser.feed(b"BAD x\n")
    with pytest.raises(MalformedFrame):
        parser.feed(b"STAT x\n")


@given(st.binary(max_size=600))
def test_fuzzRequestParser(data: bytes) -> None:
    """Any bytes give requests or MalformedFrame, nothing else, whatever the split."""
    for cut in {0, len(data) // 2, len(data)}:
        parser = RequestParser()
        try:
            parser.feed(data[:cut])
            parser.feed(data[cut:])
        except MalformedFrame:
            pass


@given(st.lists(st.sampled_from(REQUESTS), max_size=5), st.binary(max_size=40))
def test_fuzzValidPrefix(requests: list, junk: bytes) -> None:
    """Valid requests followed by junk: the valid ones come out first (or on the error)."""
    parser = RequestParser()
    stream = b"".join(encodeRequest(r) for r in requests) + junk
    try:
        got = parser.feed(stream)
    except MalformedFrame as e:
        got = e.requests  # type: ignore[attr-defined]
    assert got[: len(requests)] == requests


def _responses() -> tuple[bytes, list[bool]]:
    stream = (
        encodeResponseHead(200, "OK", size=5, offset=0, version="abc")
        + b"hello"
        + encodeTrailer("0" * 64)
        + encodeResponseHead(404, "not found")
        + encodeResponseHead(200, "OK", size=3, kind="dir")
        + b"x\ny"
        + encodeResponseHead(200, "OK", size=0, offset=9, version="abc")
        + encodeTrailer(None)
    )
    return stream, [True, True, False, True]


def _collect(events: list) -> list:
    merged: list = []
    for e in events:
        if isinstance(e, BodyData) and merged and isinstance(merged[-1], BodyData):
            merged[-1] = BodyData(merged[-1].data + e.data)
        elif not (isinstance(e, BodyData) and not e.data):
            merged.append(e)
    return merged


def test_responseSplitAtEveryByte() -> None:
    """Responses (with bodies and trailers) parse the same however they are split."""
    stream, kinds = _responses()
    expected = None
    for cut in range(len(stream) + 1):
        parser = ResponseParser()
        for k in kinds:
            parser.expect(k)
        events = _collect(parser.feed(stream[:cut]) + parser.feed(stream[cut:]))
        if expected is None:
            expected = events
        assert events == expected
    assert expected is not None
    heads = [e for e in expected if isinstance(e, ResponseHead)]
    assert [h.status for h in heads] == [200, 404, 200, 200]
    assert heads[0].version == "abc" and heads[3].offset == 9
    assert BodyData(b"hello") in expected and BodyData(b"x\ny") in expected
    ends = [e for e in expected if isinstance(e, ResponseEnd)]
    assert ends == [
        ResponseEnd(Trailer("0" * 64)),
        ResponseEnd(None),
        ResponseEnd(None),
        ResponseEnd(Trailer(None, changed=True)),
    ]


def test_responseWithoutRequest() -> None:
    """A response nobody asked for is a framing error."""
    with pytest.raises(MalformedFrame):
        ResponseParser().feed(encodeResponseHead(200, "OK"))


@given(st.binary(max_size=400))
def test_fuzzResponseParser(data: bytes) -> None:
    """Any bytes give events or MalformedFrame."""
    parser = ResponseParser()
    parser.expect(True)
    parser.expect(False)
    try:
        parser.feed(data)
    except MalformedFrame:
        pass


def test_bodyTaken() -> None:
    """
    Body bytes taken outside feed (the client's splice) are accounted: the trailer
    or the next head then parses as if they had been fed.
    """
    parser = ResponseParser()
    parser.expect(True)
    parser.expect(False)
    head = encodeResponseHead(200, "OK", size=10, offset=0, version="ab")
    assert parser.bodyRemaining == 0
    [first, data] = parser.feed(head + b"abc")
    assert isinstance(first, ResponseHead) and data == BodyData(b"abc")
    assert parser.bodyRemaining == 7
    with pytest.raises(ValueError):
        parser.bodyTaken(8)
    assert parser.bodyTaken(4) == [] and parser.bodyRemaining == 3
    assert parser.bodyTaken(3) == [] and parser.bodyRemaining == 0
    events = parser.feed(b"changed\n" + encodeResponseHead(200, "OK", size=2) + b"x")
    assert events[0] == ResponseEnd(Trailer(None, changed=True))
    assert parser.bodyRemaining == 1
    assert parser.bodyTaken(1) == [ResponseEnd(None)]
