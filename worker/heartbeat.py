"""Keeps a claimed job's lease alive from a background thread while the training loop runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from store.db import session_scope
from store.repositories import jobs

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the lease every `interval` seconds; `lost` turns True when the lease is gone
    (it expired and another worker took the job), and the job must then stop without finishing.
    `on_beat` runs after each renewal (keeping the job's broker message from being re-delivered)."""

    def __init__(self, job_id: str, worker_id: str, interval: float, lease_seconds: float,
                 on_beat: Callable[[], None] = lambda: None) -> None:
        self.job_id, self.worker_id = job_id, worker_id
        self.interval, self.lease_seconds, self.on_beat = interval, lease_seconds, on_beat
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with session_scope() as session:
                    held = jobs.heartbeat(session, self.job_id, self.worker_id, self.lease_seconds)
            except Exception:  # transient database trouble: the lease has slack for a missed beat
                log.exception("heartbeat for %s failed", self.job_id)
                continue
            if not held:
                log.error("lease on %s lost; stopping the job", self.job_id)
                self.lost = True
                return
            try:
                self.on_beat()
            except Exception:  # the broker may be briefly away; the visibility timeout has slack too
                log.exception("keeping the message of %s invisible failed", self.job_id)
