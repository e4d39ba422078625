"""Recovers jobs whose worker died or whose message was lost; every worker's main process sweeps,
once at start-up and then periodically.

A job process killed mid-run stops heart-beating; once its lease expires the sweep re-queues the
row (or fails it when its attempts are used up) and sends a new wake-up message. Sweeps from
several workers may overlap: each row moves with one conditional UPDATE, so only one wins.

A queued job whose message is gone (Redis restarted empty, a queue purged) would wait forever; the
sweep re-sends a message for every queued job older than `requeue_grace_seconds` that has none in
the broker. A duplicate message is harmless: the job's claim lets only one delivery run it.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from store.db import session_scope
from store.models import utcnow
from store.queue import pending_job_ids, send_run_job
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


def resend_lost_messages(settings: Settings, grace_seconds: float | None = None) -> list[str]:
    """Re-send the message of every queued job that has none in the broker. Jobs younger than the
    grace period (default: settings.requeue_grace_seconds) are left alone: their creator commits the
    row before it sends the message, and may be between the two."""
    grace = settings.requeue_grace_seconds if grace_seconds is None else grace_seconds
    cutoff = utcnow() - timedelta(seconds=grace)
    with session_scope() as session:
        queued = jobs.queued_ids(session, queued_before=cutoff)
    if not queued:
        return []
    pending = pending_job_ids(settings)  # read after the rows: a message sent meanwhile is seen
    if pending is None:
        return []
    lost = [job_id for job_id in queued if job_id not in pending]
    for job_id in lost:
        log.warning("job %s was queued with no message in the broker; message re-sent", job_id)
        send_run_job(job_id, settings)
    return lost


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
    while True:
        for sweep in (sweep_once, resend_lost_messages):
            try:
                sweep(settings)
            except Exception:  # the database or broker may be briefly away; the next sweep tries again
                log.exception("%s failed", sweep.__name__)
        if _stop.wait(interval):
            return
