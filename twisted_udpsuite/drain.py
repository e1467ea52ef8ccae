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

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["DEFAULT_DRAIN", "DrainingMultiService"]

DEFAULT_DRAIN = 10.0
"""Seconds a stop waits for running transfers by default."""


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

        d.addErrback(failed)
        d.addCallback(lambda _: MultiService.stopService(self))
        return d
