# -*- test-case-name: tests.test_twistedprivate -*-
"""
Every use the suite makes of Twisted's private or undocumented behaviour, in one place.

Twisted may change any of these in a release without a deprecation period.  Each is
wrapped here behind a small typed API, the rest of the suite uses only that API, and
C{tests.test_twistedprivate} checks each one against the installed Twisted, so that a
change shows up as one failing test naming what moved, not as odd behaviour elsewhere.

What is relied on:
  - C{udp.Port._bindSocket}: called by C{startListening} with the port's socket
    bound (or adopted); L{SocketBoundPort} turns it into the public hook
    L{SocketBoundPort.socketBound}.
  - C{udp.Port._fromListeningDescriptor}: the port for an already bound socket, as
    C{reactor.adoptDatagramPort} makes it, but of a subclass; L{SocketBoundPort.adopt}.
  - C{Clock.calls} and C{Clock._sortCalls}: the clock's scheduled calls, which
    L{earliestCall} and L{popDueCall} read in time order.
  - The reactor calling C{doRead} on a transport as an attribute looked up on each read
    (Twisted's own C{abortConnection} replaces it the same way): L{overrideDoRead} and
    L{restoreDoRead}.
  - C{twisted.web._newclient.ResponseDone}, the reason a streamed HTTP body ended, tested
    by L{isResponseDone}: C{twisted.web.client} exports it too, but importing that module
    early imports Twisted's endpoints, whose systemd parser reads C{LISTEN_FDS}; and it is
    imported only when asked, so that the suite's UDP and file services never load
    C{twisted.web}.
  - C{twisted.internet.tcp} (and C{endpoints}) treating TLS as unavailable when importing
    pyOpenSSL raises C{ImportError}, and otherwise working as before: L{withoutTLS}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import abstract, udp
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.internet.task import Clock

__all__ = [
    "SocketBoundPort",
    "earliestCall",
    "isResponseDone",
    "overrideDoRead",
    "popDueCall",
    "restoreDoRead",
    "withoutTLS",
]

_P = TypeVar("_P", bound="SocketBoundPort")


class SocketBoundPort(udp.Port):
    """
    A C{udp.Port} that calls L{socketBound} once its socket exists, before it starts
    reading: the place to set socket options that a plain C{udp.Port} does not.
    """

    def __init__(
        self,
        port: int,
        proto: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,
        reactor: IReactorFDSet | None = None,
    ) -> None:
        # Twisted's udp.Port is unannotated, hence the ignores in this class.
        super().__init__(port, proto, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]

    def socketBound(self) -> None:
        """
        Called from C{startListening} with C{self.socket} bound, or adopted (see
        L{adopt}), and not yet read.  Does nothing here; subclasses set options.
        """

    def _bindSocket(self) -> None:
        super()._bindSocket()  # type: ignore[no-untyped-call]
        self.socketBound()

    def listen(self) -> None:
        """C{startListening}: bind (or take the adopted socket) and start reading."""
        self.startListening()  # type: ignore[no-untyped-call]

    @classmethod
    def adopt(
        cls: type[_P],
        reactor: IReactorFDSet,
        fd: int,
        family: int,
        protocol: AbstractDatagramProtocol,
        maxPacketSize: int,
    ) -> _P:
        """
        A port of this class on the bound datagram socket C{fd} of C{family}, as
        C{reactor.adoptDatagramPort} makes one (C{fd} is duplicated, not taken), not yet
        listening: call L{listen}, which calls L{socketBound} too.
        """
        port: _P = cls._fromListeningDescriptor(  # type: ignore[no-untyped-call]
            reactor, fd, family, protocol, maxPacketSize
        )
        return port


def earliestCall(clock: Clock) -> DelayedCall | None:
    """The call C{clock} will run first (of those due at once, the first scheduled)."""
    clock._sortCalls()
    return clock.calls[0] if clock.calls else None


def popDueCall(clock: Clock, end: float) -> DelayedCall | None:
    """
    Take the call C{clock} would run next out of its schedule, if it is due by C{end},
    leaving the caller to run it: C{Clock.advance} one call at a time.
    """
    call = earliestCall(clock)
    if call is None or call.getTime() > end:
        return None
    return clock.calls.pop(0)


def overrideDoRead(transport: object, doRead: Callable[[], Any]) -> None:
    """
    Have the reactor call C{doRead} instead of C{transport}'s own when its socket is
    readable, until L{restoreDoRead}.  C{doRead} returns what a C{doRead} returns: None,
    or the reason the connection ended (C{main.CONNECTION_DONE}, C{main.CONNECTION_LOST}).

    @raise TypeError: C{transport} is not a file descriptor the reactor reads (an
        in-memory transport, say).
    """
    if not isinstance(transport, abstract.FileDescriptor):
        raise TypeError(f"not a transport the reactor reads: {transport!r}")
    transport.doRead = doRead  # type: ignore[method-assign]


def restoreDoRead(transport: object, doRead: Callable[[], Any]) -> None:
    """Undo L{overrideDoRead}C{(transport, doRead)}, if that is still in place."""
    if vars(transport).get("doRead") == doRead:
        delattr(transport, "doRead")


def isResponseDone(reason: BaseException | None) -> bool:
    """Whether C{reason} says a streamed HTTP body ended whole (Twisted's C{ResponseDone})."""
    from twisted.web._newclient import ResponseDone

    return isinstance(reason, ResponseDone)


def withoutTLS() -> None:
    """
    Keep this process from loading pyOpenSSL: for the C{udpsuite} command line only, which
    never speaks TLS, and must call this before the reactor is imported.

    Importing the reactor imports C{twisted.internet.tcp}, which imports pyOpenSSL (and
    through it C{cryptography}) only to see whether C{startTLS} can be offered: some 50 ms,
    a quarter of a command's start-up.  pyOpenSSL is always installed with the
    suite (treq needs it).  Marking it missing (C{None} in C{sys.modules}, which makes its
    import raise C{ImportError}) makes Twisted take TLS as unavailable, as on a system
    without pyOpenSSL: TCP works as before, without C{startTLS}.

    Nothing is done if pyOpenSSL is already imported.  Never call this in library code or
    under twistd: the TFTP server's HTTP origin reaches https through treq, which needs
    pyOpenSSL, and so may any code that shares the process.
    """
    sys.modules.setdefault("OpenSSL", None)  # type: ignore[arg-type]
