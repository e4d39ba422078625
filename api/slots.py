"""Things in progress (uploads) per API key and in all, counted in this API process's memory.

Each upload in progress holds a connection, a temp file and a share of the disk's bandwidth for
as long as its client takes, so one key could otherwise open enough of them to crowd everyone
else out. Past `per_key` for a key, or `in_all` together, a new one is a 429 until one ends. Like
the rate limiter, each process counts on its own: N API processes allow N times the numbers.
"""

from __future__ import annotations

import threading
from collections import Counter

from api.errors import ApiError


class Slot:
    """One thing's place; `release` gives it back (once, however often it is called)."""

    def __init__(self, slots: Slots, key: str) -> None:
        self._slots, self._key, self._held = slots, key, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._key)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Slots:
    """Counts by key (a key's hash, never the key itself) and in all of `noun`s in progress;
    refusals are 429 `code` with a Retry-After of `retry_after_s`."""

    def __init__(self, noun: str, code: str, retry_after_s: int) -> None:
        self.noun, self.code, self.retry_after_s = noun, code, retry_after_s
        self._by_key: Counter[str] = Counter()
        self._open = 0
        self._lock = threading.Lock()  # taken on the event loop and on the thread pool alike

    def acquire(self, key: str, per_key: int, in_all: int) -> Slot:
        """A slot for one more of `key`'s, or ApiError 429 when `per_key` of the key's or `in_all`
        (0: no limit) are already in progress."""
        with self._lock:
            if per_key and self._by_key[key] >= per_key:
                raise self._refused(f"{per_key} {self.noun} are already in progress with this API key; "
                                    "wait for one to finish")
            if in_all and self._open >= in_all:
                raise self._refused(f"this server already has {in_all} {self.noun} in progress; retry later")
            self._by_key[key] += 1
            self._open += 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        with self._lock:
            self._open -= 1
            self._by_key[key] -= 1
            if self._by_key[key] <= 0:
                del self._by_key[key]  # a key used once holds no memory afterwards

    def _refused(self, message: str) -> ApiError:
        return ApiError(429, self.code, f"{message} (retry in {self.retry_after_s} s)",
                        headers={"Retry-After": str(self.retry_after_s)})
