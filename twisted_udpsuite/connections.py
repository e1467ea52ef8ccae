"""
A TCP server's connections: limits on how many are open, the factory that enforces
them, the idle timer of a connection, and the transport its protocol talks to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin

from twisted_udpsuite.addresses import hostOf

__all__ = [
    "ConnectionLimits",
    "IConnectionTransport",
    "IdleTimeout",
    "LimitedServerFactory",
    "peerText",
]

_P = TypeVar("_P", bound=Protocol)


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
        """A connection from C{host} was accepted."""
        self.open[host] += 1

    def closed(self, host: str) -> None:
        """A connection from C{host} is gone."""
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]


class IConnectionTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    What a stream protocol of the suite asks of its transport: a TCP transport that
    also takes a producer (a body sender) and can be paused (reading stops).
    """


if TYPE_CHECKING or issubclass(Factory, Generic):
    _Factory = Factory
else:  # Twisted before 25.5: Factory is not generic, so give it a parameter to ignore.

    class _Factory(Factory, Generic[_P]):
        pass


class LimitedServerFactory(_Factory[_P]):
    """
    A server factory that refuses connections over its limits, in total and per client
    address (L{ConnectionLimits}), and knows the connections it accepted.

    Its protocol calls L{connectionClosed} from C{connectionLost}.  A subclass may
    refuse for reasons of its own (L{refusal}) and answer a refused connection
    (L{refuseConnection}: by default it is closed at once).

    @ivar limits: the open connections and their limits.
    @ivar protocols: the open connections' protocols, each with its client's address.
    @ivar refusedConnections: connections refused, by the limit that refused them.
    """

    noisy = False

    def __init__(self, maxConnections: int, maxPerHost: int) -> None:
        self.limits = ConnectionLimits(maxConnections, maxPerHost)
        self.protocols: dict[_P, str] = {}
        self.refusedConnections: Counter[str] = Counter()

    def refusal(self, host: str) -> str | None:
        """Why a new connection from C{host} is refused, or None: a limit's name."""
        return self.limits.refusal(host)

    def refuseConnection(self, host: str, limit: str) -> Protocol | None:
        """What answers a connection from C{host} refused by C{limit}; None closes it."""
        return None

    def buildProtocol(self, addr: IAddress | None) -> _P | None:
        host = hostOf(getattr(addr, "host", str(addr)))
        limit = self.refusal(host)
        if limit is not None:
            self.refusedConnections[limit] += 1
            # A refusal's protocol is not one of ours: it only answers and closes.
            return self.refuseConnection(host, limit)  # type: ignore[return-value]
        proto = super().buildProtocol(addr)
        assert proto is not None
        self.limits.opened(host)
        self.protocols[proto] = host
        return proto

    def connectionClosed(self, proto: _P) -> str:
        """C{proto}'s connection is gone: count it closed; its client's address."""
        host = self.protocols.pop(proto)
        self.limits.closed(host)
        return host


class IdleTimeout(TimeoutMixin):
    """
    Twisted's C{TimeoutMixin}, typed, on the clock a protocol names in C{clock}.

    The protocol sets C{clock} before L{setTimeout}, calls L{resetTimeout} on traffic
    and overrides C{timeoutConnection}.
    """

    clock: IReactorTime

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        return self.clock.callLater(period, func)

    def setTimeout(self, period: float | None) -> float | None:
        """Start the idle timer, or change its period; None stops it."""
        # Twisted's TimeoutMixin has no type hints.
        return super().setTimeout(period)  # type: ignore[no-untyped-call,no-any-return]

    def resetTimeout(self) -> None:
        """Traffic happened: restart the idle timer (if it runs)."""
        super().resetTimeout()  # type: ignore[no-untyped-call]


def peerText(transport: IConnectionTransport) -> tuple[str, str]:
    """The peer's address (for limits) and C{host:port} (C{[v6]:port}) for log lines."""
    peer = transport.getPeer()
    host = hostOf(getattr(peer, "host", str(peer)))
    port = getattr(peer, "port", "")
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
