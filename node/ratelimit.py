"""Token buckets: the per-peer message limit and the lookup quotas share one implementation."""

from __future__ import annotations

import time
from collections.abc import Hashable

MAX_KEYS = 100_000


class TokenBucket:
    """``rate`` takes per second, with a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a lender, an asking agency), created on first use; the
    table is bounded (strangers could come with ever new keys)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[Hashable, TokenBucket] = {}

    def take(self, key: Hashable) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(self.rate)
        return bucket.take()
