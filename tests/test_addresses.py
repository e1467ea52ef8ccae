"""Tests for L{twisted_udpsuite.addresses} and L{twisted_udpsuite.ratelimit}."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from twisted_udpsuite import addresses
from twisted_udpsuite.addresses import (
    LocalBroadcasts,
    hostOf,
    isUnanswerableSource,
    parseHostPort,
    subnetBroadcasts,
)
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
    assert isUnanswerableSource(address, broadcasts=frozenset()) is unanswerable


@pytest.mark.parametrize(
    "address, unanswerable",
    [
        ("10.96.0.255", True),
        ("::ffff:10.96.0.255", True),
        ("10.96.0.0", True),
        ("10.96.0.254", False),
        ("10.97.0.255", False),
    ],
)
def test_isUnanswerableSourceLocalBroadcast(address: str, unanswerable: bool) -> None:
    """
    The directed broadcast (and network) address of a local subnet is refused as a source,
    V4-mapped too: it can only be forged, and answering it would reach the whole LAN.
    """
    local = LocalBroadcasts(lambda: subnetBroadcasts(ipaddress.IPv4Interface("10.96.0.1/24")))
    assert isUnanswerableSource(address, local) is unanswerable


def test_isUnanswerableSourceDefaultsToTheHost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit set, the host's own broadcast addresses are checked."""
    monkeypatch.setattr(addresses, "localBroadcasts", LocalBroadcasts(lambda: ["10.96.0.255"]))
    assert isUnanswerableSource("10.96.0.255")
    assert not isUnanswerableSource("10.96.0.254")


@pytest.mark.parametrize(
    "interface, expected",
    [
        ("10.96.0.1/24", ["10.96.0.255", "10.96.0.0"]),
        ("172.16.5.9/12", ["172.31.255.255", "172.16.0.0"]),
        ("192.0.2.1/30", ["192.0.2.3", "192.0.2.0"]),
        ("192.0.2.1/31", []),
        ("192.0.2.1/32", []),
    ],
)
def test_subnetBroadcasts(interface: str, expected: list[str]) -> None:
    """Computed from the netmask; point-to-point prefixes (/31, /32) have none."""
    assert subnetBroadcasts(ipaddress.IPv4Interface(interface)) == expected


def test_localBroadcastsKeptCurrent() -> None:
    """
    The addresses are read once per TTL however many lookups come (a flood costs one
    read), and read again after it, so a new interface counts within the TTL.
    """
    clock = Clock()
    current = ["10.96.0.255"]
    reads = []

    def read() -> list[str]:
        reads.append(clock.seconds())
        return list(current)

    local = LocalBroadcasts(read, clock.seconds, ttl=2.0)
    assert all("10.96.0.255" in local for _ in range(1000))
    current[:] = ["10.97.0.255"]
    clock.advance(1.9)
    assert "10.97.0.255" not in local
    clock.advance(0.1)
    assert "10.97.0.255" in local and "10.96.0.255" not in local
    assert reads == [0.0, 2.0]


def _rtattr(kind: int, value: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def _newaddr(family: int, prefixlen: int, **attributes: bytes) -> bytes:
    kinds = {"address": 1, "local": 2, "label": 3, "broadcast": 4}
    body = struct.pack("=BBBBI", family, prefixlen, 0, 0, 2) + b"".join(
        _rtattr(kinds[k], v) for k, v in attributes.items()
    )
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_parseAddressDump() -> None:
    """
    A netlink RTM_GETADDR dump gives every IPv4 address's subnet broadcasts, the
    configured broadcast too; IPv6 entries and truncated attributes are skipped.
    """
    v4 = socket.inet_aton
    dump = (
        _newaddr(
            socket.AF_INET,
            24,
            address=v4("10.96.0.1"),
            local=v4("10.96.0.1"),
            broadcast=v4("10.96.0.255"),
            label=b"eth0\0",
        )  # fmt: skip
        + _newaddr(socket.AF_INET, 16, local=v4("10.98.3.4"))
        + _newaddr(socket.AF_INET, 32, local=v4("10.99.0.1"), broadcast=v4("10.99.0.7"))
        + _newaddr(socket.AF_INET6, 64, address=socket.inet_pton(socket.AF_INET6, "fe80::1"))
        + _newaddr(socket.AF_INET, 8, local=b"\x7f")
    )
    found: list[str] = []
    assert addresses._parseAddressDump(dump, found)
    done = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4
    assert not addresses._parseAddressDump(done, found)
    assert found == ["10.96.0.255", "10.96.0.0", "10.98.255.255", "10.98.0.0", "10.99.0.7"]


def test_readLocalBroadcastsOfThisHost() -> None:
    """
    Read from the kernel: the loopback's 127.0.0.1/8, always there on Linux, gives
    127.255.255.255 (the namespace tests check other interfaces and secondary addresses).
    """
    found = addresses.readLocalBroadcasts()
    assert "127.255.255.255" in found


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
    """
    The limiter keeps at most maxSources buckets. It forgets the least recent once it is
    full again; until then new sources share one overflow bucket (#16 §4: forgetting a
    bucket in use gave its source a fresh burst).
    """
    clock = Clock()
    limiter = PerSourceLimiter(clock, rate=1, burst=1, maxSources=3)
    assert limiter.allow("a") and not limiter.allow("a")
    for source in "bc":
        assert limiter.allow(source)
    assert limiter.allow("d") and not limiter.allow("e")  # the overflow bucket, shared
    assert len(limiter) == 3
    assert not limiter.allow("a")  # still remembered: still spent
    clock.advance(1)
    assert limiter.allow("e") and not limiter.allow("e")  # "a" was full again: forgotten
    assert len(limiter) == 3
    assert limiter.allow("b")  # refilled, remembered
