"""The Celery app workers run. One job per child process (`worker_max_tasks_per_child=1`): GPU
memory and any state a job leaves behind go away with its process, and a crash kills one job,
never the worker.

Messages are acknowledged after the task returns (`task_acks_late`) and prefetched one at a time,
so a busy worker does not sit on jobs another idle GPU could run.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from store.db import dispose_engines
from store.logs import JsonFormatter
from store.queue import APP_NAME, GPU_QUEUE, broker_config
from store.settings import get_settings

celery_app = Celery(APP_NAME, include=["worker.tasks"])
celery_app.conf.update(
    broker_config(get_settings()),
    task_acks_late=True,
    task_reject_on_worker_lost=False,  # a dead job process is recovered by the lease reaper, once
    worker_prefetch_multiplier=1,
    worker_max_tasks_per_child=1,
    task_default_queue=GPU_QUEUE,
    task_track_started=False,
    worker_hijack_root_logger=False,
    # After a job process dies, wait this long (default 10 s) for its result before taking the next
    # message; results are ignored here, so waiting only delays the recovered job.
    worker_lost_wait=1.0,
)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger: logging.Logger, **_: Any) -> None:
    """`XMODAL_LOG_FORMAT=json`: Celery's handlers keep their streams but write JSON lines."""
    if get_settings().log_format == "json":
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())


@signals.worker_init.connect
def _preload_training_code(**_: Any) -> None:
    """Import core's training code (torch, transformers) once in the main process, before the pool
    forks: every job process then starts with it loaded instead of spending seconds of CPU on the
    imports (most of a short job's cost). Importing does not initialise CUDA, so forking stays safe."""
    import core.runner  # noqa: F401
    from transformers import AutoConfig, AutoModel  # noqa: F401  (core.modeling.bodies imports them lazily)


@signals.worker_process_init.connect
def _forget_parent_connections(**_: Any) -> None:
    """A forked child must not reuse database connections its parent opened."""
    dispose_engines(close=False)


@signals.worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    """Sweep for lost jobs and messages; drop temp files a killed job process left mid-checkpoint."""
    from store.blobs import blob_store
    from worker.reaper import start_reaper

    settings = get_settings()
    blob_store(settings).remove_stale_temp_files()
    start_reaper(settings)


@signals.worker_shutting_down.connect
def _hand_back_running_jobs(**_: Any) -> None:
    """Warm shutdown would wait for running jobs (hours); make them checkpoint and re-queue now."""
    from worker.preemption import forward_to_job_processes

    forward_to_job_processes()


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    """Stop sweeping, then send the messages of jobs handed back during the shutdown (the consumer
    has stopped, so this worker cannot take them back)."""
    from worker.reaper import resend_lost_messages, stop_reaper

    stop_reaper()
    try:
        resend_lost_messages(get_settings(), grace_seconds=0)  # a rare duplicate message is harmless
    except Exception:  # the periodic sweep of any other worker re-sends them
        logging.getLogger(__name__).exception("re-sending handed-back jobs at shutdown failed")
