"""Recovers jobs whose worker died: every worker's main process sweeps expired leases.

A job process killed mid-run stops heart-beating; once its lease expires the sweep re-queues the
row (or fails it when its attempts are used up) and sends a new wake-up message. Sweeps from
several workers may overlap: each row moves with one conditional UPDATE, so only one wins.
"""

from __future__ import annotations

import logging
import threading

from store.db import session_scope
from store.queue import send_run_job
from store.repositories import jobs
from store.settings import Settings

log = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def sweep_once(settings: Settings) -> jobs.Sweep:
    """Recover expired leases, then wake workers for the re-queued jobs (after the commit)."""
    with session_scope() as session:
        sweep = jobs.requeue_expired(session)
    for job_id in sweep.requeued:
        send_run_job(job_id, settings)
    for job_id in sweep.requeued + sweep.failed + sweep.cancelled:
        log.warning("recovered job %s after an expired lease", job_id)
    return sweep


def sweep_interval(settings: Settings) -> float:
    return max(1.0, settings.lease_seconds / 4)


def start_reaper(settings: Settings) -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(settings,), name="xmodal-lease-reaper", daemon=True)
    _thread.start()


def stop_reaper() -> None:
    _stop.set()


def _loop(settings: Settings) -> None:
    interval = sweep_interval(settings)
    while not _stop.wait(interval):
        try:
            sweep_once(settings)
        except Exception:  # the database may be briefly away; the next sweep tries again
            log.exception("lease sweep failed")
