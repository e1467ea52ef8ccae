"""
Checks and coercers of option values (ports, addresses, bounded numbers), shared by the
twistd services' options (L{twisted_udpsuite.service}) and the C{udpsuite} commands'
(L{twisted_udpsuite.command}): apart from both, so that a command does not import
Twisted's application framework to check its options.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

from twisted.python import usage

__all__ = ["checkInterface", "checkPort", "numberOption"]


def checkInterface(value: str) -> str:
    """C{--interface}: empty (all IPv4), C{::} (all, IPv6 too) or one IP address."""
    if value in ("", "::"):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise usage.UsageError(
            f"--interface: {value!r} is not an IP address (use '' for all IPv4, '::' for all)"
        ) from None


def numberOption(
    name: str,
    kind: type[int] | type[float] = float,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    zeroMeansNone: bool = False,
) -> Callable[[str], Any]:
    """
    A C{usage.Options} coercer for C{--NAME}: a finite number of C{kind}
    that is at least C{low}, at most C{high} and greater than C{above} (each
    where given).  With C{zeroMeansNone}, 0 (for "unlimited") becomes C{None}.
    """
    if low is not None and high is not None:
        bound = f"from {low} to {high}"
    elif low is not None:
        bound = f"at least {low}"
    elif high is not None:
        bound = f"at most {high}"
    else:
        bound = f"greater than {above}"

    def coerce(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            what = "whole number" if kind is int else "number"
            raise usage.UsageError(f"--{name}: {value!r} is not a {what}") from None
        if (
            not math.isfinite(number)
            or (low is not None and number < low)
            or (high is not None and number > high)
            or (above is not None and number <= above)
        ):
            raise usage.UsageError(f"--{name}: must be {bound}")
        return None if zeroMeansNone and number == 0 else number

    return coerce


def checkPort(value: str, option: str = "--port") -> int:
    """A port number option: 0 (any free port) to 65535."""
    if not value.isdigit() or int(value) > 65535:
        raise usage.UsageError(f"{option}: {value!r} is not a port number (0-65535)")
    return int(value)
