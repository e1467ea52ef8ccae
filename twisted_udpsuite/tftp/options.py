# -*- test-case-name: tests.tftp.test_options -*-
"""
TFTP option negotiation (RFC 2347 framework; blksize RFC 2348; timeout and tsize RFC 2349;
windowsize RFC 7440). Pure: both sides are plain functions over C{dict[str, str]}.

The server never refuses a request because of its options (RFC 2347 §"Option Negotiation":
the server omits from the OACK every option it does not accept); the client refuses an OACK it
cannot live with by sending ERROR 8 (L{OptionRefused}).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted_udpsuite.tftp.wire import ErrorCode

__all__ = [
    "DEFAULT_BLKSIZE",
    "MAX_BLKSIZE",
    "MAX_TIMEOUT",
    "MAX_TSIZE",
    "MAX_WINDOWSIZE",
    "MIN_BLKSIZE",
    "MIN_TIMEOUT",
    "MIN_WINDOWSIZE",
    "OPTION_NAMES",
    "OptionRefused",
    "ServerOptionLimits",
    "TransferOptions",
    "TransferTooLarge",
    "acceptServerOptions",
    "blksizeForMTU",
    "buildRequestOptions",
    "checkUploadSize",
    "negotiateServerOptions",
    "parseOptionValue",
]

DEFAULT_BLKSIZE = 512
"""RFC 1350's fixed block size, used when C{blksize} is not negotiated."""
MIN_BLKSIZE = 8
"""RFC 2348: smallest valid C{blksize}."""
MAX_BLKSIZE = 65464
"""RFC 2348: largest valid C{blksize} (fits a 65535-byte IP datagram)."""
MIN_TIMEOUT = 1
"""RFC 2349: smallest valid C{timeout} in seconds."""
MAX_TIMEOUT = 255
"""RFC 2349: largest valid C{timeout} in seconds."""
MIN_WINDOWSIZE = 1
"""RFC 7440: smallest valid C{windowsize} (1 is RFC 1350 lock-step)."""
MAX_WINDOWSIZE = 65535
"""RFC 7440: largest valid C{windowsize}."""
MAX_TSIZE = 2**63 - 1
"""Largest C{tsize} we believe (a signed 64-bit file offset); larger values are invalid."""

OPTION_NAMES = frozenset({"blksize", "timeout", "tsize", "windowsize"})
"""The options a server negotiates (RFC 2348, 2349, 7440); others are ignored."""

_IP_HEADER = {4: 20, 6: 40}
_UDP_AND_TFTP_HEADERS = 8 + 4

# More digits than this (after leading zeros) is out of every range above; checking the length
# first also keeps int() away from its 4300-digit ValueError.
_MAX_DIGITS = len(str(MAX_TSIZE))


class OptionRefused(Exception):
    """
    The client cannot accept the server's OACK. RFC 2347: it answers ERROR 8 and ends the
    transfer.
    """

    errorCode = ErrorCode.OPTION_REFUSED


class TransferTooLarge(Exception):
    """
    An upload is larger than the server allows. RFC 2349 lets the server refuse a WRQ whose
    C{tsize} is too big, with ERROR 3 (disk full or allocation exceeded).
    """

    errorCode = ErrorCode.DISK_FULL


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """
    The options in force for one transfer. The defaults are RFC 1350 behaviour: 512-byte blocks,
    lock-step, the endpoint's own retransmission timeout and no announced size.

    @ivar timeout: Retransmission timeout in seconds agreed with the peer, or C{None} for the
        endpoint's own default.
    @ivar tsize: Transfer size in bytes (RFC 2349), or C{None} if unknown.
    """

    blksize: int = DEFAULT_BLKSIZE
    timeout: int | None = None
    tsize: int | None = None
    windowsize: int = 1


@dataclass(frozen=True, slots=True)
class ServerOptionLimits:
    """
    What a server is willing to grant. The defaults accept every RFC value except windows
    larger than 64 blocks, which only buy speed up to the socket buffer and cost memory.

    @ivar maxBlksize: Requests above this are lowered to it (RFC 2348 allows a smaller answer).
    @ivar maxWindowsize: Requests above this are lowered to it (RFC 7440 allows the same).
    @ivar allowTimeout: Whether to let the client choose the retransmission timeout.
    @ivar allowTsize: Whether to answer C{tsize} at all.
    @ivar maxUploadSize: Largest upload in bytes, or C{None} for no limit; see
        L{checkUploadSize}.
    @ivar refused: Options never granted, whatever the client asks (lower-case names from
        L{OPTION_NAMES}): firmware with a broken implementation of one (a windowsize it
        cannot follow) then gets RFC 1350 behaviour for it.
    """

    maxBlksize: int = MAX_BLKSIZE
    maxWindowsize: int = 64
    allowTimeout: bool = True
    allowTsize: bool = True
    maxUploadSize: int | None = None
    refused: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not MIN_BLKSIZE <= self.maxBlksize <= MAX_BLKSIZE:
            raise ValueError(f"maxBlksize must be within {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        if not MIN_WINDOWSIZE <= self.maxWindowsize <= MAX_WINDOWSIZE:
            raise ValueError(f"maxWindowsize must be within {MIN_WINDOWSIZE}..{MAX_WINDOWSIZE}")
        if self.maxUploadSize is not None and self.maxUploadSize < 0:
            raise ValueError("maxUploadSize must not be negative")
        unknown = self.refused - OPTION_NAMES
        if unknown:
            raise ValueError(f"unknown options to refuse: {', '.join(sorted(unknown))}")


def blksizeForMTU(mtu: int, ipVersion: int) -> int:
    """
    The largest C{blksize} whose DATA packets fit in one IP packet of C{mtu} bytes (no
    fragments): the MTU less the IP, UDP and TFTP headers, within RFC 2348's range.
    """
    fitting = mtu - _IP_HEADER[ipVersion] - _UDP_AND_TFTP_HEADERS
    return max(MIN_BLKSIZE, min(MAX_BLKSIZE, fitting))


def parseOptionValue(value: str) -> int | None:
    """
    Parse an option value as RFC 2347 defines it: a decimal ASCII number. Only digits are
    allowed (no sign, no spaces, not empty); leading zeros are fine. Values above L{MAX_TSIZE}
    give C{None} like any other invalid value, without ever building a huge int.

    @return: The number, or C{None} if C{value} is not a valid option number.
    """
    if not value or not value.isascii() or not value.isdigit():
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return None
    number = int(digits)
    return number if number <= MAX_TSIZE else None


def negotiateServerOptions(
    requested: dict[str, str],
    *,
    isRead: bool,
    limits: ServerOptionLimits,
    fileSize: int | None,
) -> tuple[TransferOptions, dict[str, str]]:
    """
    Decide the server's answer to a request's options.

    Rules (an option that is not accepted is simply left out; RFC 2347 forbids refusing a
    request for it):
      - Unknown options (including C{utimeout}) are ignored, and so are those in
        C{limits.refused}.
      - C{blksize} (RFC 2348): below 8 or not a number is ignored; anything above
        C{limits.maxBlksize} (including above 65464) is lowered to it.
      - C{windowsize} (RFC 7440): 0 or not a number is ignored; above C{limits.maxWindowsize}
        (including above 65535) is lowered to it.
      - C{timeout} (RFC 2349): 1..255 is echoed if C{limits.allowTimeout}, else ignored.
      - C{tsize} (RFC 2349): on a read, answered with C{fileSize}, or left out if the size is not
        known; on a write, the client's size is echoed (see L{checkUploadSize} for the quota).

    @param requested: The request's options, as parsed by L{wire.parsePacket}.
    @param isRead: C{True} for an RRQ, C{False} for a WRQ.
    @param fileSize: On a read, the size the transfer will have on the wire (the converted size
        for netascii), or C{None} if unknown.
    @return: The options in force and the OACK to send; an empty OACK means "send none" and
        start the transfer as RFC 1350 does.
    """
    blksize = DEFAULT_BLKSIZE
    timeout: int | None = None
    tsize: int | None = None
    windowsize = 1
    oack: dict[str, str] = {}
    seen: set[str] = set()
    for rawName, rawValue in requested.items():
        name = rawName.lower()
        if name in seen:
            # The codec refuses duplicates; for other callers the first occurrence decides,
            # whether or not its value is valid.
            continue
        seen.add(name)
        value = parseOptionValue(rawValue)
        if value is None or name in limits.refused:
            continue
        if name == "blksize":
            if value < MIN_BLKSIZE:
                continue
            blksize = min(value, limits.maxBlksize)
            oack[name] = str(blksize)
        elif name == "windowsize":
            if value < MIN_WINDOWSIZE:
                continue
            windowsize = min(value, limits.maxWindowsize)
            oack[name] = str(windowsize)
        elif name == "timeout":
            if not limits.allowTimeout or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
                continue
            timeout = value
            oack[name] = str(timeout)
        elif name == "tsize":
            if not limits.allowTsize:
                continue
            if isRead:
                if fileSize is None:
                    continue
                tsize = fileSize
            else:
                tsize = value
            oack[name] = str(tsize)
    return TransferOptions(blksize, timeout, tsize, windowsize), oack


def checkUploadSize(size: int | None, limits: ServerOptionLimits) -> None:
    """
    Enforce C{limits.maxUploadSize}. Call it with the negotiated C{tsize} of a WRQ before
    answering (RFC 2349: refuse at once rather than after the client has sent the data), and
    again with the running byte count while receiving, since C{tsize} is optional and only a
    claim.

    @raise TransferTooLarge: If C{size} exceeds the limit; answer ERROR 3.
    """
    if size is not None and limits.maxUploadSize is not None and size > limits.maxUploadSize:
        raise TransferTooLarge(
            f"upload of {size} bytes exceeds the limit of {limits.maxUploadSize} bytes"
        )


def _checkRange(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} {value} is outside {low}..{high}")


def buildRequestOptions(
    *,
    blksize: int | None = None,
    timeout: int | None = None,
    tsize: int | None = None,
    windowsize: int | None = None,
) -> dict[str, str]:
    """
    Build the options of a client's RRQ/WRQ; C{None} leaves an option out.

    @param tsize: On a read pass 0 to ask the server for the size; on a write pass the size of
        the file being sent (RFC 2349).
    @raise ValueError: For a value outside its RFC range, which a server would ignore anyway.
    """
    _checkRange("blksize", blksize, MIN_BLKSIZE, MAX_BLKSIZE)
    _checkRange("timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT)
    _checkRange("tsize", tsize, 0, MAX_TSIZE)
    _checkRange("windowsize", windowsize, MIN_WINDOWSIZE, MAX_WINDOWSIZE)
    options: dict[str, str] = {}
    for name, value in (
        ("blksize", blksize),
        ("timeout", timeout),
        ("tsize", tsize),
        ("windowsize", windowsize),
    ):
        if value is not None:
            options[name] = str(value)
    return options


def _requestedNumber(requested: dict[str, str], name: str) -> int:
    value = parseOptionValue(requested[name])
    if value is None:
        raise ValueError(f"requested {name} {requested[name]!r} is not a number")
    return value


def acceptServerOptions(requested: dict[str, str], oack: dict[str, str]) -> TransferOptions:
    """
    Check the server's OACK against what the client asked for.

    Rules: an option the client did not ask for is refused (RFC 2347: the server may only
    acknowledge requested options); C{blksize} (RFC 2348) and C{windowsize} (RFC 7440) may be
    lowered but not raised; C{timeout} must be echoed unchanged (RFC 2349); C{tsize} may be
    any size (RFC 2349: the server states it on a read). A malformed or out-of-range value is
    refused. Options the OACK leaves out fall back to their defaults.

    @param requested: The options the client sent (as from L{buildRequestOptions}).
    @param oack: The options of the server's OACK.
    @raise OptionRefused: If the OACK is unacceptable; answer ERROR 8.
    @raise ValueError: If C{requested} itself holds a malformed value.
    """
    asked = {name.lower(): value for name, value in requested.items()}
    blksize = DEFAULT_BLKSIZE
    timeout: int | None = None
    tsize: int | None = None
    windowsize = 1
    for rawName, rawValue in oack.items():
        name = rawName.lower()
        if name not in asked:
            raise OptionRefused(f"server acknowledged option {name!r}, which was not requested")
        value = parseOptionValue(rawValue)
        if value is None:
            raise OptionRefused(f"server sent a malformed {name} {rawValue!r}")
        if name == "blksize":
            if not MIN_BLKSIZE <= value <= _requestedNumber(asked, name):
                raise OptionRefused(f"server blksize {value} is not within 8..requested")
            blksize = value
        elif name == "windowsize":
            if not MIN_WINDOWSIZE <= value <= _requestedNumber(asked, name):
                raise OptionRefused(f"server windowsize {value} is not within 1..requested")
            windowsize = value
        elif name == "timeout":
            if value != _requestedNumber(asked, name):
                raise OptionRefused(f"server changed timeout to {value}")
            timeout = value
        elif name == "tsize":
            tsize = value
    return TransferOptions(blksize, timeout, tsize, windowsize)
