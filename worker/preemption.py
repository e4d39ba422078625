"""Graceful shutdown: SIGTERM makes a running job checkpoint and go back to the queue.

Celery's warm shutdown waits for running tasks, and a job may run for hours, so the worker's main
process forwards SIGTERM to its job processes (`forward_to_job_processes`). In a job process the
signal only sets a flag (`ShutdownRequest`); the training loop sees it at its next step through
the stop controller (worker.stopping), saves a checkpoint and returns, and the lifecycle hands the job back
with `jobs.release`, so another worker resumes it from that checkpoint.

The job process does not send the job's new message itself: this worker still consumes during its
warm shutdown and would take the job straight back. The main process sends it once the consumer
has stopped (worker.app, on `worker_shutdown`); if that process dies first, any worker's periodic
sweep re-sends it (worker.reaper).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class ShutdownRequest:
    """While entered, SIGTERM sets `requested` instead of ending the process."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> ShutdownRequest:
        # Only the main thread may install handlers; jobs run there in worker processes.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *_: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.warning("SIGTERM: checkpointing at the next step and handing the job back")
        self.requested.set()


def forward_to_job_processes() -> None:
    """Send SIGTERM to every pool process of this worker (called on the worker's warm shutdown)."""
    import billiard.process

    for child in billiard.process.active_children():
        if child.pid is not None:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
