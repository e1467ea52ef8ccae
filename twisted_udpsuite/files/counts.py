"""
What a file server answered, counted for its metrics (L{twisted_udpsuite.metrics}):
the framed protocol's, the plain one's and HTTP's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted_udpsuite.files.wire import Status

__all__ = ["RequestCounts", "outcomeLabel"]


@dataclass
class RequestCounts:
    """
    What a file server answered, for its metrics (L{twisted_udpsuite.metrics}).

    @ivar requests: answered requests by (status code, outcome); the outcome is C{ok},
        C{error} (a status other than 200), C{changed} (the file changed while sent),
        C{disconnected} (the client went away mid-body), C{failed} (a read error) or
        C{cut} (the server stopped before the body was sent).
    @ivar bytesSent: body bytes sent.
    @ivar refused: connections refused, by limit (C{total}, C{per-host}, C{stopping}).
    @ivar openConnections: how many connections are open now.
    """

    openConnections: Callable[[], int]
    requests: Counter[tuple[int, str]] = field(default_factory=Counter)
    bytesSent: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def answered(self, status: int, outcome: str, sent: int) -> None:
        """Count one answer: its status, outcome label and body bytes."""
        self.requests[status, outcome] += 1
        self.bytesSent += sent


def outcomeLabel(status: int, outcome: str) -> str:
    """The bounded outcome label of a request's free-text C{outcome} (see L{RequestCounts})."""
    if status != Status.OK:
        return "error"
    if outcome in ("ok", "cut"):
        return outcome
    return {"changed while sent": "changed", "client disconnected": "disconnected"}.get(
        outcome, "failed"
    )
