"""Sending work to the workers, by task name only, so the API never imports worker code or torch.

The broker settings live here too: the worker's Celery app is configured from the same function,
so producer and consumer cannot disagree about queues or filesystem folders.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from store.settings import Settings, get_settings

APP_NAME = "xmodal"
RUN_JOB_TASK = "xmodal.run_job"
GPU_QUEUE = "gpu"
# Redis re-delivers an unacknowledged message after this long. A job runs for hours and is acked
# only when done (acks_late); a duplicate delivery is harmless (the claim fails), so make it rare.
REDIS_VISIBILITY_TIMEOUT_S = 24 * 3600
# An idle filesystem:// consumer lists the queue folder this often (kombu's default is 1 s, which
# is then the typical dispatch delay); 10 directory listings a second cost next to nothing.
FILESYSTEM_POLLING_INTERVAL_S = 0.1


def broker_config(settings: Settings) -> dict[str, Any]:
    """Celery settings both sides share: broker, transport options, default queue, no results."""
    options: dict[str, Any] = {}
    if settings.broker_url.startswith("filesystem://"):
        # One folder serves as both ends: producers write where consumers read. Two consumers
        # racing for one message file may both get it; the job claim makes that harmless.
        queue, control = settings.broker_dir / "queue", settings.broker_dir / "control"
        for path in (queue, control):
            path.mkdir(parents=True, exist_ok=True)
        options = {"data_folder_in": str(queue), "data_folder_out": str(queue), "control_folder": str(control),
                   "polling_interval": FILESYSTEM_POLLING_INTERVAL_S}
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        options = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": GPU_QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


_clients: dict[tuple[str, str], Celery] = {}


def _client(settings: Settings) -> Celery:
    """A bare producer per broker (kept: it pools the broker connection)."""
    key = (settings.broker_url, str(settings.broker_dir))
    if key not in _clients:
        client = Celery(APP_NAME, set_as_current=False)
        client.conf.update(broker_config(settings))
        _clients[key] = client
    return _clients[key]


def send_run_job(job_id: str, settings: Settings | None = None) -> None:
    """Wake a worker for `job_id`. The job row is already committed; the message only points at it."""
    _client(settings or get_settings()).send_task(RUN_JOB_TASK, args=[job_id], queue=GPU_QUEUE)
