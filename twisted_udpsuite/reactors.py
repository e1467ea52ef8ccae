"""
The reactor types the library accepts, and the one place it falls back to Twisted's
global reactor.

Each combined interface names what a part of the suite asks of its reactor, as treq's
C{_ITreqReactor} does, so that a caller may pass any provider (the global reactor, a
L{twisted.internet.testing.MemoryReactorClock}, a L{twisted_udpsuite.testing.MemoryHost})
and mypy checks the calls made on it.
"""

from __future__ import annotations

from typing import TypeVar, cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)

__all__ = [
    "IReactorNetwork",
    "IReactorTCPTime",
    "IReactorUDPTime",
    "reactorOr",
]


class IReactorUDPTime(IReactorUDP, IReactorTime):
    """A reactor for a UDP protocol with timers (echo, chat, discovery, TFTP, IPMsg)."""


class IReactorTCPTime(IReactorTCP, IReactorTime):
    """A reactor for a TCP protocol with timers (the file server and its client)."""


class IReactorNetwork(
    IReactorUDPTime, IReactorTCPTime, IReactorCore, IReactorPluggableNameResolver
):
    """Everything a service or a command-line client may ask: both transports, timers,
    start-up and shutdown hooks, and name resolution."""


_R = TypeVar("_R")


def reactorOr(reactor: _R | None) -> _R:
    """
    C{reactor} itself, or the global reactor when it is L{None}.

    Library classes take an optional reactor (tests pass a clock or a
    L{twisted_udpsuite.testing.MemoryHost}) and import the global one only
    here, lazily, so that importing the suite never installs a reactor.
    Call it once, on entry to a public function or constructor.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return cast(_R, globalReactor)
    return reactor
