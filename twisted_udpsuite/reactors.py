"""The one place library code falls back to Twisted's global reactor."""

from __future__ import annotations

from typing import Any


def reactorOr(reactor: Any | None) -> Any:
    """
    C{reactor} itself, or the global reactor when it is L{None}.

    Library classes take an optional reactor (tests pass a clock or a
    L{twisted_udpsuite.testing.MemoryHost}) and import the global one only
    here, lazily, so that importing the suite never installs a reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor
