"""Why a running job must stop, asked by the training loop between optimizer steps: its owner
cancelled it, the worker is shutting down (SIGTERM), or its lease was lost to another worker."""

from __future__ import annotations

import logging
import threading
import time
from core.callbacks import Callback, StopRequest
from store.db import TRANSIENT_ERRORS
from store.repositories import jobs
from worker.heartbeat import Heartbeat
from worker.retry import in_session

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0


class StopController(Callback):
    """Tells the run why it must stop (`stop_reason`); core hands the reason back in its RunResult.
    The cancel flag is read from the database at most every CANCEL_POLL_SECONDS."""

    def __init__(self, job_id: str, heartbeat: Heartbeat, shutdown: threading.Event) -> None:
        self.job_id, self.heartbeat, self.shutdown = job_id, heartbeat, shutdown
        self._cancel_requested = False
        self._last_cancel_poll = time.monotonic()

    def stop_reason(self) -> StopRequest | None:
        if self.heartbeat.lost:
            return "lease_lost"
        if self.shutdown.is_set():
            return "shutdown"
        if not self._cancel_requested and time.monotonic() - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = time.monotonic()
            try:  # a missed poll only delays a cancel; training goes on while the database is away
                self._cancel_requested = in_session(lambda s: jobs.is_cancel_requested(s, self.job_id),
                                                    give_up_after=0)
            except TRANSIENT_ERRORS as exc:
                log.warning("cancel poll for %s failed: %s", self.job_id, str(exc).splitlines()[0])
        return "cancelled" if self._cancel_requested else None
