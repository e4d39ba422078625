"""Request rate per API key: a token bucket per key, held in this API process's memory.

Each process (each `xmodal serve --workers` worker, each host) counts on its own, so a deployment
with N API processes lets a key make up to N times the configured rate. That is enough to stop a
runaway client without a shared store; a Redis-backed bucket can replace this class later.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests a minute per key, in bursts of up to `per_minute`."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # sync routes' dependencies run on a thread pool

    def take(self, key: str, per_minute: int) -> int | None:
        """Spend one token of `key`'s bucket: None when allowed, else whole seconds until one is free."""
        rate = per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(float(per_minute), now))
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - bucket.tokens) / rate))
