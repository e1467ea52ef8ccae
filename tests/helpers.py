"""Small helpers for synchronous tests on Deferreds (trial has these; pytest does not)."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def successResultOf(d: Deferred[T]) -> T:
    """The result of a Deferred that has already succeeded."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def failureResultOf(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """The failure of a Deferred that has already failed (with one of C{types})."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    assert isinstance(results[0], Failure), f"{d!r} succeeded with {results[0]!r}"
    if types:
        assert results[0].check(*types), f"unexpected failure {results[0]!r}"
    return results[0]


def assertNoResult(d: Deferred[Any]) -> None:
    """Assert C{d} has not fired yet (without consuming a later result)."""
    results: list[Any] = []
    d.addBoth(lambda r: results.append(r) or r)
    assert not results, f"{d!r} fired with {results[0]!r}"


def useHostBroadcasts(monkeypatch: Any, host: Any) -> None:
    """
    Make L{twisted_udpsuite.addresses.isUnanswerableSource} take the subnets of C{host} (a
    L{twisted_udpsuite.testing.MemoryHost}) for this machine's, read on the network's clock.
    """
    from twisted_udpsuite import addresses

    def read() -> list[str]:
        v4 = [i for i in host.interfaces if i.version == 4]
        return [a for i in v4 for a in addresses.subnetBroadcasts(i)]

    monkeypatch.setattr(addresses, "localBroadcasts", addresses.LocalBroadcasts(read, host.seconds))
