"""Tests for L{twisted_udpsuite.tftp.options}: RFC 2347/2348/2349/7440 negotiation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_udpsuite.tftp.options import (
    MAX_TSIZE,
    OptionRefused,
    ServerOptionLimits,
    TransferOptions,
    TransferTooLarge,
    acceptServerOptions,
    buildRequestOptions,
    checkUploadSize,
    negotiateServerOptions,
    parseOptionValue,
)
from twisted_udpsuite.tftp.wire import ErrorCode

HUGE = "99999999999999999999"
DEFAULT_LIMITS = ServerOptionLimits()


def _server(
    requested: dict[str, str],
    *,
    isRead: bool = True,
    limits: ServerOptionLimits = DEFAULT_LIMITS,
    fileSize: int | None = 1000,
) -> tuple[TransferOptions, dict[str, str]]:
    return negotiateServerOptions(requested, isRead=isRead, limits=limits, fileSize=fileSize)


# Value parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("0512", 512),
        ("000", 0),
        ("0" * 5000 + "8", 8),
        (str(MAX_TSIZE), MAX_TSIZE),
        (str(MAX_TSIZE + 1), None),
        (HUGE, None),
        ("9" * 5000, None),
        ("", None),
        ("-1", None),
        ("+8", None),
        (" 512", None),
        ("512 ", None),
        ("5.0", None),
        ("0x10", None),
        ("abc", None),
        ("\u00b2", None),
        ("\u0665", None),
    ],
)
def test_parseOptionValue(value: str, expected: int | None) -> None:
    """
    Values are plain decimal digits (leading zeros allowed); signs, spaces, non-ASCII digits and
    numbers beyond a 64-bit size are invalid, and very long inputs never reach int().
    """
    assert parseOptionValue(value) == expected


@given(st.text(max_size=30))
def test_parseOptionValueNeverRaises(value: str) -> None:
    """Any text gives a non-negative int or C{None}, never an exception."""
    result = parseOptionValue(value)
    assert result is None or 0 <= result <= MAX_TSIZE


# Server: general ----------------------------------------------------------------------------


def test_serverNoOptions() -> None:
    """No options requested: RFC 1350 defaults and no OACK."""
    assert _server({}) == (TransferOptions(), {})


def test_serverUnknownOptionsIgnored() -> None:
    """Unknown options (and C{utimeout}) are left out of the OACK, not refused (RFC 2347)."""
    assert _server({"foo": "1", "utimeout": "500000", "multicast": ""}) == (
        TransferOptions(),
        {},
    )


def test_serverUpperCaseNames() -> None:
    """Names are matched case-insensitively (tx-tftp acknowledged C{BLKSIZE} and ignored it)."""
    options, oack = _server({"BLKSIZE": "1428"})
    assert options.blksize == 1428
    assert oack == {"blksize": "1428"}


def test_serverDuplicateAfterLowering() -> None:
    """If a caller passes names differing only in case, the first one decides, even if invalid."""
    options, oack = _server({"blksize": "1024", "BLKSIZE": "2048"})
    assert options.blksize == 1024
    assert oack == {"blksize": "1024"}
    assert _server({"BLKSIZE": "0", "blksize": "8"}) == (TransferOptions(), {})


def test_serverAllOptions() -> None:
    """A PXE-like request gets every option answered, in request order."""
    options, oack = _server(
        {"tsize": "0", "blksize": "1468", "windowsize": "8", "timeout": "3"}, fileSize=4096
    )
    assert options == TransferOptions(blksize=1468, timeout=3, tsize=4096, windowsize=8)
    assert list(oack.items()) == [
        ("tsize", "4096"),
        ("blksize", "1468"),
        ("windowsize", "8"),
        ("timeout", "3"),
    ]


@pytest.mark.parametrize("value", ["", "abc", "-1", "+512", " 512", "5e2"])
@pytest.mark.parametrize("name", ["blksize", "timeout", "tsize", "windowsize"])
def test_serverMalformedValuesOmitted(name: str, value: str) -> None:
    """A malformed value leaves its option out of the OACK and at its default."""
    assert _server({name: value}) == (TransferOptions(), {})


def test_serverLeadingZeros() -> None:
    """Leading zeros are valid decimal; the OACK answers the canonical number."""
    options, oack = _server({"blksize": "01024", "timeout": "005"})
    assert (options.blksize, options.timeout) == (1024, 5)
    assert oack == {"blksize": "1024", "timeout": "5"}


# Server: blksize (RFC 2348) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", None),
        ("0", None),
        ("8", 8),
        ("511", 511),
        ("512", 512),
        ("1428", 1428),
        ("1468", 1468),
        ("8192", 8192),
        ("8193", 8193),
        ("65464", 65464),
        ("65465", 65464),
        (HUGE, None),
    ],
)
def test_serverBlksize(value: str, expected: int | None) -> None:
    """
    blksize below 8 is ignored; up to 65464 it is granted; above, it is lowered to the cap.
    A number too large to be any size at all is ignored like other invalid values.
    """
    options, oack = _server({"blksize": value})
    if expected is None:
        assert (options.blksize, oack) == (512, {})
    else:
        assert (options.blksize, oack) == (expected, {"blksize": str(expected)})


def test_serverBlksizeCap() -> None:
    """A server capped at 1468 (MTU-safe) lowers larger requests and grants smaller ones."""
    limits = ServerOptionLimits(maxBlksize=1468)
    assert _server({"blksize": "8192"}, limits=limits)[1] == {"blksize": "1468"}
    assert _server({"blksize": "1024"}, limits=limits)[1] == {"blksize": "1024"}


# Server: timeout (RFC 2349) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", None), ("1", 1), ("255", 255), ("256", None), (HUGE, None)],
)
def test_serverTimeout(value: str, expected: int | None) -> None:
    """timeout is echoed within 1..255 seconds and left out otherwise."""
    options, oack = _server({"timeout": value})
    assert options.timeout == expected
    assert oack == ({} if expected is None else {"timeout": value})


def test_serverTimeoutDisallowed() -> None:
    """With C{allowTimeout=False} a valid timeout is still left out."""
    limits = ServerOptionLimits(allowTimeout=False)
    assert _server({"timeout": "5"}, limits=limits) == (TransferOptions(), {})


# Server: windowsize (RFC 7440) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", None),
        ("1", 1),
        ("2", 2),
        ("16", 16),
        ("64", 64),
        ("65", 64),
        ("65535", 64),
        ("65536", 64),
        (HUGE, None),
    ],
)
def test_serverWindowsize(value: str, expected: int | None) -> None:
    """windowsize 0 is ignored; above the server's cap (default 64) it is lowered to the cap."""
    options, oack = _server({"windowsize": value})
    if expected is None:
        assert (options.windowsize, oack) == (1, {})
    else:
        assert (options.windowsize, oack) == (expected, {"windowsize": str(expected)})


def test_serverWindowsizeFullRange() -> None:
    """With the cap at the RFC maximum, 65535 is granted and 65536 lowered to 65535."""
    limits = ServerOptionLimits(maxWindowsize=65535)
    assert _server({"windowsize": "65535"}, limits=limits)[1] == {"windowsize": "65535"}
    assert _server({"windowsize": "65536"}, limits=limits)[1] == {"windowsize": "65535"}


# Server: tsize (RFC 2349) -------------------------------------------------------------------


def test_serverTsizeRead() -> None:
    """On an RRQ, tsize 0 is answered with the file size."""
    options, oack = _server({"tsize": "0"}, fileSize=123456)
    assert options.tsize == 123456
    assert oack == {"tsize": "123456"}


def test_serverTsizeReadEmptyFile() -> None:
    """An empty file is announced as tsize 0 (a correct answer, even if curl dislikes it)."""
    assert _server({"tsize": "0"}, fileSize=0)[1] == {"tsize": "0"}


def test_serverTsizeReadNonZeroRequest() -> None:
    """A read asking tsize with a non-zero value still gets the real size."""
    assert _server({"tsize": "77"}, fileSize=5)[1] == {"tsize": "5"}


def test_serverTsizeReadUnknownSize() -> None:
    """When the size is unknown (e.g. netascii not precomputed) tsize is left out."""
    assert _server({"tsize": "0"}, fileSize=None) == (TransferOptions(), {})


def test_serverTsizeWrite() -> None:
    """On a WRQ the client's tsize is echoed and the file size is irrelevant."""
    options, oack = _server({"tsize": "4096"}, isRead=False, fileSize=None)
    assert options.tsize == 4096
    assert oack == {"tsize": "4096"}


def test_serverTsizeWriteHuge() -> None:
    """A tsize beyond any real file is invalid and left out."""
    assert _server({"tsize": HUGE}, isRead=False) == (TransferOptions(), {})


def test_serverTsizeDisallowed() -> None:
    """With C{allowTsize=False} tsize is never answered."""
    limits = ServerOptionLimits(allowTsize=False)
    assert _server({"tsize": "0"}, limits=limits) == (TransferOptions(), {})


def test_uploadQuota() -> None:
    """
    L{checkUploadSize} refuses an announced or running size over C{maxUploadSize} with
    L{TransferTooLarge}, which maps to ERROR 3.
    """
    limits = ServerOptionLimits(maxUploadSize=1000)
    options, oack = _server({"tsize": "1001"}, isRead=False, limits=limits)
    assert oack == {"tsize": "1001"}
    with pytest.raises(TransferTooLarge) as info:
        checkUploadSize(options.tsize, limits)
    assert info.value.errorCode == ErrorCode.DISK_FULL
    checkUploadSize(1000, limits)
    checkUploadSize(None, limits)
    checkUploadSize(10**18, ServerOptionLimits())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maxBlksize": 7},
        {"maxBlksize": 65465},
        {"maxWindowsize": 0},
        {"maxWindowsize": 65536},
        {"maxUploadSize": -1},
    ],
)
def test_limitsValidated(kwargs: dict[str, int]) -> None:
    """Limits outside the RFC ranges are a configuration error."""
    with pytest.raises(ValueError):
        ServerOptionLimits(**kwargs)


@given(
    st.dictionaries(
        st.sampled_from(["blksize", "timeout", "tsize", "windowsize", "BLKSIZE", "x"]),
        st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=25)),
    ),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 2**40)),
)
def test_serverOackAcceptableToClient(
    requested: dict[str, str], isRead: bool, fileSize: int | None
) -> None:
    """
    Whatever a client asks, the server's OACK only holds valid values, and a client that sent
    those options accepts it and ends up with the same transfer options as the server.
    """
    options, oack = _server(requested, isRead=isRead, fileSize=fileSize)
    assert 8 <= options.blksize <= 65464
    assert 1 <= options.windowsize <= 64
    lowered = {}
    for name, value in requested.items():
        lowered.setdefault(name.lower(), value)
    if all(parseOptionValue(lowered[name]) is not None for name in oack):
        assert acceptServerOptions(lowered, oack) == options


# Client -------------------------------------------------------------------------------------


def test_buildRequestOptions() -> None:
    """Only the options given are requested, as decimal text."""
    assert buildRequestOptions() == {}
    assert buildRequestOptions(blksize=1468, tsize=0, windowsize=16, timeout=2) == {
        "blksize": "1468",
        "timeout": "2",
        "tsize": "0",
        "windowsize": "16",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blksize": 7},
        {"blksize": 65465},
        {"timeout": 0},
        {"timeout": 256},
        {"windowsize": 0},
        {"windowsize": 65536},
        {"tsize": -1},
    ],
)
def test_buildRequestOptionsRange(kwargs: dict[str, int]) -> None:
    """Values a server would ignore are rejected while building the request."""
    with pytest.raises(ValueError):
        buildRequestOptions(**kwargs)


def test_clientAcceptsFullOack() -> None:
    """An OACK granting what was asked gives exactly those options."""
    requested = buildRequestOptions(blksize=1468, timeout=2, tsize=0, windowsize=16)
    oack = {"blksize": "1468", "timeout": "2", "tsize": "9000", "windowsize": "16"}
    assert acceptServerOptions(requested, oack) == TransferOptions(1468, 2, 9000, 16)


def test_clientFallsBackToDefaults() -> None:
    """Options the OACK leaves out fall back to their RFC 1350 defaults."""
    requested = buildRequestOptions(blksize=8192, windowsize=8, timeout=3, tsize=0)
    assert acceptServerOptions(requested, {"tsize": "10"}) == TransferOptions(tsize=10)


def test_clientAcceptsLowered() -> None:
    """The server may lower blksize (RFC 2348) and windowsize (RFC 7440)."""
    requested = buildRequestOptions(blksize=65464, windowsize=64)
    options = acceptServerOptions(requested, {"blksize": "1468", "windowsize": "4"})
    assert (options.blksize, options.windowsize) == (1468, 4)


def test_clientLeadingZerosAndCase() -> None:
    """OACK names are matched case-insensitively and values may have leading zeros."""
    options = acceptServerOptions({"BlkSize": "1024"}, {"BLKSIZE": "01024"})
    assert options.blksize == 1024


@pytest.mark.parametrize(
    ("requested", "oack"),
    [
        ({}, {"blksize": "512"}),
        ({"blksize": "1024"}, {"windowsize": "4"}),
        ({"blksize": "1024"}, {"blksize": "1025"}),
        ({"blksize": "1024"}, {"blksize": "7"}),
        ({"blksize": "1024"}, {"blksize": "abc"}),
        ({"blksize": "1024"}, {"blksize": HUGE}),
        ({"windowsize": "8"}, {"windowsize": "9"}),
        ({"windowsize": "8"}, {"windowsize": "0"}),
        ({"timeout": "5"}, {"timeout": "6"}),
        ({"timeout": "5"}, {"timeout": "-5"}),
        ({"tsize": "0"}, {"tsize": "-1"}),
        ({"tsize": "0"}, {"tsize": ""}),
    ],
)
def test_clientRefuses(requested: dict[str, str], oack: dict[str, str]) -> None:
    """
    Unrequested options, raised blksize/windowsize, a changed timeout and malformed values make
    the client refuse the OACK with L{OptionRefused}, which maps to ERROR 8.
    """
    with pytest.raises(OptionRefused) as info:
        acceptServerOptions(requested, oack)
    assert info.value.errorCode == ErrorCode.OPTION_REFUSED


def test_clientMalformedRequest() -> None:
    """A malformed value in the client's own request is a programming error, not a refusal."""
    with pytest.raises(ValueError):
        acceptServerOptions({"blksize": "big"}, {"blksize": "512"})
