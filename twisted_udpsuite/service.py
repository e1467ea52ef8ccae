"""
What every suite service shares: the C{--port}/C{--interface} options and
the L{ServiceSpec} through which a protocol adds itself to C{twistd -n
udpsuite} (see L{twisted_udpsuite.tap}).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage


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
    where given).  With C{zeroMeansNone}, 0 (for "unlimited") becomes L{None}.
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


class ServiceOptions(usage.Options):
    """
    Base for each service's options: C{--port} and C{--interface}.

    Subclasses set L{defaultPort} and add their own options.  C{--interface}
    defaults to all IPv4 interfaces (C{''}), as C{shared/CLI.md} requires.
    """

    defaultPort: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self["port"] = self.defaultPort
        self["interface"] = ""

    def opt_port(self, value: str) -> None:
        """Port number to listen on (0: any free port)."""
        self["port"] = checkPort(value)

    opt_p = opt_port

    def opt_interface(self, value: str) -> None:
        """Address to bind: '' all IPv4 (default), '::' all IPv4+IPv6, or one address."""
        self["interface"] = checkInterface(value)

    opt_i = opt_interface


@dataclass(frozen=True)
class ServiceSpec:
    """
    One C{twistd -n udpsuite} subcommand.

    @ivar makeService: C{makeService(options, reactor)} returning the
        (not yet started) service; C{reactor} is the one to listen on.
    """

    name: str
    description: str
    options: type[ServiceOptions]
    makeService: Callable[[Any, Any], IService]
