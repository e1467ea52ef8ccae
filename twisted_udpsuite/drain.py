# -*- test-case-name: tests.test_drain -*-
"""
Stopping without cutting transfers (C{twistd -n udpsuite --drain SECONDS}).

A service that runs transfers offers C{drain(timeout) -> Deferred}: refuse new requests at
once, let the running transfers finish for up to C{timeout} seconds, abort the rest (they
log the outcome C{cut}), and fire when none is left. L{DrainingMultiService} drains every
child that offers it before it stops any of them, so SIGTERM under twistd (which stops the
application's services and waits for their Deferreds) finishes transfers first; the
listening ports stay open meanwhile, to answer a new request with a refusal rather than
silence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

__all__ = ["DEFAULT_DRAIN", "Drain", "DrainingMultiService", "IDrainable"]

DEFAULT_DRAIN = 10.0
"""Seconds a stop waits for running transfers by default."""


class IDrainable(Interface):
    """
    A protocol or factory that can finish its running work before its port closes
    (C{twistd udpsuite --drain}).

    L{twisted_udpsuite.service.ListeningService.drain} calls L{drain} on every listener's
    protocol that provides this, and closes the ports once all have fired.
    """

    def drain(timeout: float) -> Deferred[None]:
        """
        Refuse new work at once, let the work in hand finish for up to C{timeout}
        seconds, cut the rest; fire when none is left.  Asking twice is harmless.
        """


class DrainingMultiService(MultiService):
    """
    A L{MultiService} whose C{stopService} first drains the children that can be drained.

    @ivar drainTimeout: seconds the running transfers get (0: cut them at once).
    """

    log = Logger(namespace="twisted_udpsuite")
    drainTimeout: float = DEFAULT_DRAIN

    def drain(self) -> Deferred[Any]:
        """Drain every child that has a C{drain} method, all at once."""
        drains = [
            maybeDeferred(child.drain, self.drainTimeout)
            for child in self
            if callable(getattr(child, "drain", None))
        ]
        return gatherResults(drains, consumeErrors=True)

    def stopService(self) -> Deferred[Any]:
        if self.running:
            self.log.info(
                "stopping: running transfers get up to {timeout} s to finish",
                timeout=self.drainTimeout,
            )
        d = self.drain()

        def failed(failure: Failure) -> None:
            self.log.failure("draining before stop", failure)

        def stop(_: object) -> Deferred[None] | None:
            stopped: Deferred[None] | None = MultiService.stopService(self)  # type: ignore[no-untyped-call]
            return stopped

        return d.addErrback(failed).addCallback(stop)


class Drain:
    """
    The bookkeeping of one server's drain: who waits for it, and the deadline after which
    the transfers left are cut. The server says when it has nothing left running
    (L{check}) and how to cut what is (C{cut}).

    @ivar stopping: whether a drain has begun (new requests are then refused).
    """

    def __init__(self, clock: IReactorTime, cut: Callable[[], None]) -> None:
        self._clock = clock
        self._cut = cut
        self.stopping = False
        self._waiting: list[Deferred[None]] = []
        self._deadline: IDelayedCall | None = None

    def begin(self, timeout: float, idle: bool) -> Deferred[None]:
        """Start (or join) the drain; fires once the server is idle (at once if C{idle})."""
        self.stopping = True
        if idle:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if self._deadline is None:
            self._deadline = self._clock.callLater(timeout, self._over)
        return d

    def _over(self) -> None:
        self._deadline = None
        self._cut()

    def check(self, idle: bool) -> None:
        """The server's running transfers changed: fire the waiters once none is left."""
        if not (self.stopping and idle):
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
