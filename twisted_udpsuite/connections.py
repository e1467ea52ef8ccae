"""Counting a TCP server's open connections against its total and per-host limits."""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    """
    Open connections, in total and per client address, with their limits.

    A factory asks L{refusal} in C{buildProtocol}, calls L{opened} when it
    accepts and L{closed} from the protocol's C{connectionLost}.

    @ivar open: open connections per client address.
    """

    def __init__(self, maxConnections: int, maxPerHost: int) -> None:
        self.maxConnections = maxConnections
        self.maxPerHost = maxPerHost
        self.open: Counter[str] = Counter()

    def refusal(self, host: str) -> str | None:
        """Why a new connection from C{host} is refused (C{"total"}, C{"per-host"}), or None."""
        if self.open.total() >= self.maxConnections:
            return "total"
        if self.open[host] >= self.maxPerHost:
            return "per-host"
        return None

    def opened(self, host: str) -> None:
        self.open[host] += 1

    def closed(self, host: str) -> None:
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]
