"""
The reactor types the library accepts, and the one place it falls back to Twisted's
global reactor.

Each combined interface names what a part of the suite asks of its reactor, as treq's
C{_ITreqReactor} does, so that a caller may pass any provider (the global reactor, a
L{twisted.internet.testing.MemoryReactorClock}, a L{twisted_udpsuite.testing.MemoryHost})
and mypy checks the calls made on it.  Each also names C{Interface} among its bases,
which changes nothing for zope but lets pydoctor, which does not read Twisted, see an
interface.
"""

from __future__ import annotations

from typing import TypeVar, cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFromThreads,
    IReactorPluggableNameResolver,
    IReactorSocket,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)
from zope.interface import Interface

__all__ = [
    "IReactorNetwork",
    "IReactorTCPTime",
    "IReactorUDPCore",
    "IReactorUDPTime",
    "reactorOr",
]


class IReactorUDPTime(IReactorUDP, IReactorTime, Interface):
    """A reactor for a UDP protocol with timers (echo, chat, discovery, TFTP, IPMsg)."""


class IReactorTCPTime(IReactorTCP, IReactorTime, Interface):
    """A reactor for a TCP protocol with timers (the file server and its client)."""


class IReactorUDPCore(IReactorUDPTime, IReactorCore, Interface):
    """A UDP peer a person drives (chat, IPMsg): timers, name resolution and shutdown hooks."""


class IReactorNetwork(
    IReactorUDPCore,
    IReactorTCPTime,
    IReactorPluggableNameResolver,
    IReactorSocket,
    IReactorFromThreads,
    Interface,
):
    """Everything a service or a command-line client may ask: both transports, timers,
    start-up and shutdown hooks, name resolution, sockets bound by someone else (systemd,
    inetd, a parent process) and calls from other threads (signal handlers)."""


_R = TypeVar("_R")


def reactorOr(reactor: _R | None) -> _R:
    """
    C{reactor} itself, or the global reactor when it is C{None}.

    Library classes take an optional reactor (tests pass a clock or a
    L{twisted_udpsuite.testing.MemoryHost}) and import the global one only
    here, lazily, so that importing the suite never installs a reactor.
    Call it once, on entry to a public function or constructor.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return cast(_R, globalReactor)
    return reactor
