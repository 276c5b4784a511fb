"""A per-user token bucket for the prediction lookups, kept in the API-server process.

In process on purpose: no shared store to run, and a lookup costs one dictionary update. The price
is that each API-server worker keeps its own buckets, so with N workers a user may get up to N times
the rate; set the rate per worker (`[batchwatch] predictions_per_second` and `predictions_burst` in
Airflow's configuration, or AIRFLOW__BATCHWATCH__PREDICTIONS_PER_SECOND / ..._BURST).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_PER_SECOND = 10.0
DEFAULT_BURST = 20


@dataclass
class TokenBucket:
    """`burst` requests at once, then `per_second` on average; each user has a bucket of their own."""

    per_second: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(
                f"the prediction rate limit needs predictions_per_second > 0 and predictions_burst >= 1, "
                f"got {self.per_second} and {self.burst}; fix [batchwatch] in airflow.cfg"
            )

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0 when allowed, else the seconds until a token is back."""
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.per_second

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))
