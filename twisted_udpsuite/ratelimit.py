"""
Token buckets, alone and per source address, on an injected clock.

Every UDP service in the suite answers datagrams whose source may be forged;
a per-source bucket keeps each from becoming a reflector.  The per-source
table is bounded, so a flood of forged sources cannot grow it without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """
    Allows C{rate} events per second on average, in bursts of up to C{burst}.

    @param rate: tokens added per second (must be > 0).
    @param burst: bucket size; a new bucket starts full.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Spend C{tokens} if the bucket holds them; say whether it did."""
        self._refill(now)
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    def isFull(self, now: float) -> bool:
        """A full bucket carries no state worth keeping."""
        self._refill(now)
        return self._tokens >= self.burst


class PerSourceLimiter:
    """
    One L{TokenBucket} per source key (usually the peer's IP address).

    At most C{maxSources} buckets are kept. When the table is full, the least recently
    used one is forgotten if it is full again (it carries no state); if even that one is
    still spending, nothing is forgotten and the new sources share one overflow bucket
    until a slot frees. Forgetting a bucket in use would hand its source a fresh burst:
    a flood rotating over more forged sources than the table holds could then have any
    one address (its victim's) answered at will.

    @param rate: events per second per source.
    @param burst: burst per source.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        burst: float,
        maxSources: int = 4096,
    ) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self.maxSources = maxSources
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._overflow = TokenBucket(rate, burst, clock.seconds())

    def allow(self, source: Hashable, tokens: float = 1.0) -> bool:
        """Spend C{tokens} from C{source}'s bucket; false means over the limit."""
        now = self._clock.seconds()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.maxSources:
                oldest = next(iter(self._buckets))
                if not self._buckets[oldest].isFull(now):
                    return self._overflow.take(now, tokens)
                del self._buckets[oldest]
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now, tokens)

    def __len__(self) -> int:
        return len(self._buckets)
