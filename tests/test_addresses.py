"""Tests for L{twisted_udpsuite.addresses} and L{twisted_udpsuite.ratelimit}."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from twisted_udpsuite.addresses import hostOf, isUnanswerableSource, parseHostPort
from twisted_udpsuite.ratelimit import PerSourceLimiter, TokenBucket


@pytest.mark.parametrize(
    "text, expected",
    [
        ("example.org:69", ("example.org", 69)),
        ("127.0.0.1", ("127.0.0.1", 7)),
        ("[::1]:6969", ("::1", 6969)),
        ("[fe80::1%eth0]", ("fe80::1%eth0", 7)),
        ("::1", ("::1", 7)),
        (" host:1 ", ("host", 1)),
    ],
)
def test_parseHostPort(text: str, expected: tuple[str, int]) -> None:
    """HOST, HOST:PORT, [V6]:PORT, [V6] and bare IPv6 literals parse."""
    assert parseHostPort(text, 7) == expected


@pytest.mark.parametrize("text", ["", ":69", "h:0", "h:65536", "h:x", "[::1", "[::1]x", "h:"])
def test_parseHostPortRefuses(text: str) -> None:
    """Malformed or out-of-range input is a ValueError with the input quoted."""
    with pytest.raises(ValueError):
        parseHostPort(text, None if text == "h:" else 7)


def test_parseHostPortNeedsAPort() -> None:
    """Without a default port, a bare host is refused."""
    with pytest.raises(ValueError, match="no port"):
        parseHostPort("host")


@given(st.text())
def test_parseHostPortFuzz(text: str) -> None:
    """Any text gives a (host, port in range) pair or a ValueError, nothing else."""
    try:
        host, port = parseHostPort(text, 7)
    except ValueError:
        return
    assert host and 0 < port < 65536


@pytest.mark.parametrize(
    "address, unanswerable",
    [
        ("255.255.255.255", True),
        ("224.0.0.251", True),
        ("239.255.255.250", True),
        ("0.0.0.0", True),
        ("0.1.2.3", True),
        ("240.0.0.1", True),
        ("ff02::1", True),
        ("::", True),
        ("::ffff:255.255.255.255", True),
        ("not an address", True),
        ("127.0.0.1", False),
        ("192.0.2.7", False),
        ("::1", False),
        ("::ffff:192.0.2.7", False),
        ("fe80::1%eth0", False),
    ],
)
def test_isUnanswerableSource(address: str, unanswerable: bool) -> None:
    """Broadcast, multicast, unspecified and reserved sources are never answered."""
    assert isUnanswerableSource(address) is unanswerable


def test_hostOf() -> None:
    """V4-mapped addresses and scope ids fold to one key per host."""
    assert hostOf("::ffff:192.0.2.1") == "192.0.2.1"
    assert hostOf("fe80::1%eth0") == "fe80::1"
    assert hostOf("2001:DB8::1") == "2001:db8::1"


def test_tokenBucket() -> None:
    """A bucket allows its burst, then refills at its rate, never above the burst."""
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert not bucket.isFull(1.0) and bucket.isFull(100)
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)


def test_perSourceLimiterIsBounded() -> None:
    """The limiter keeps at most maxSources buckets, forgetting the least recent."""
    clock = Clock()
    limiter = PerSourceLimiter(clock, rate=1, burst=1, maxSources=3)
    assert limiter.allow("a") and not limiter.allow("a")
    for source in "bcd":
        assert limiter.allow(source)
    assert len(limiter) == 3
    assert limiter.allow("a")  # "a" was forgotten: a fresh, full bucket
