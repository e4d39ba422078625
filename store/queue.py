"""Sending work to the workers, by task name only, so the API never imports worker code or torch.

The broker settings live here too: the worker's Celery app is configured from the same function,
so producer and consumer cannot disagree about queues or filesystem folders.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import redis
from celery import Celery

from store.settings import Settings, get_settings

log = logging.getLogger(__name__)

APP_NAME = "xmodal"
RUN_JOB_TASK = "xmodal.run_job"
GPU_QUEUE = "gpu"
# kombu's Redis transport re-delivers unacknowledged messages older than the visibility timeout;
# it scans every interval × throttle seconds (10 × 10 by default). Scan every 10 s so that the
# timeout, not the scan, decides; running jobs keep their message young (MessageVisibility).
REDIS_RESTORE_INTERVAL_S = 10
# kombu's Redis key names (its defaults; broker_config does not change them).
REDIS_UNACKED_KEY, REDIS_UNACKED_INDEX_KEY = "unacked", "unacked_index"
REDIS_PRIORITY_SEPARATOR, REDIS_PRIORITY_STEPS = "\x06\x16", (0, 3, 6, 9)
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
        options = {"visibility_timeout": settings.redis_visibility_seconds,
                   "unacked_restore_interval": REDIS_RESTORE_INTERVAL_S, "unacked_restore_throttle": 1}
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


def _job_id_of(message: dict[str, Any]) -> str | None:
    """The job id a raw kombu message carries, if it is a run_job message (Celery protocol 2)."""
    if message.get("headers", {}).get("task") != RUN_JOB_TASK:
        return None
    body = message.get("body", "")
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return str(args[0]) if args else None


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.broker_url, socket_timeout=10)


def _redis_messages(settings: Settings) -> list[dict[str, Any]]:
    """Messages waiting in the queue (every priority list) or delivered and not yet acknowledged."""
    client = _redis(settings)
    keys = [GPU_QUEUE if step == 0 else f"{GPU_QUEUE}{REDIS_PRIORITY_SEPARATOR}{step}" for step in REDIS_PRIORITY_STEPS]
    waiting = [raw for key in keys for raw in client.lrange(key, 0, -1)]
    unacked = [json.loads(raw)[0] for raw in client.hvals(REDIS_UNACKED_KEY)]
    return [json.loads(raw) for raw in waiting] + unacked


def _filesystem_messages(settings: Settings) -> list[dict[str, Any]]:
    """Message files still in the queue folder (a consumer moves a file out when it takes it)."""
    messages = []
    for path in (settings.broker_dir / "queue").glob(f"*.{GPU_QUEUE}.msg"):
        try:
            messages.append(json.loads(path.read_bytes()))
        except (FileNotFoundError, ValueError):  # taken meanwhile, or still being written
            continue
    return messages


def pending_job_ids(settings: Settings) -> set[str] | None:
    """Ids of jobs that have a run_job message in the broker; None for a broker we cannot inspect.

    A queued job missing from this set lost its message (Redis restarted without persistence, a
    queue purged by hand) and would wait forever; the reaper re-sends it.
    """
    if settings.broker_url.startswith(("redis://", "rediss://")):
        messages = _redis_messages(settings)
    elif settings.broker_url.startswith("filesystem://"):
        messages = _filesystem_messages(settings)
    else:
        return None
    return {job_id for message in messages if (job_id := _job_id_of(message)) is not None}


class MessageVisibility:
    """Keeps a running job's Redis message from being re-delivered, however long the job runs.

    kombu re-delivers an unacknowledged message once its entry in the unacked index is older than
    the visibility timeout. The job's heartbeat calls `refresh()`, which re-stamps that entry with
    the current time, so only a message whose job stopped heart-beating (a dead worker) ever ages
    out. Other brokers have no visibility timeout; there `refresh()` does nothing.
    """

    def __init__(self, settings: Settings, task_id: str | None) -> None:
        self._redis = _redis(settings) if task_id and settings.broker_url.startswith(("redis://", "rediss://")) else None
        self._task_id = task_id
        self._tag: bytes | None = None

    def refresh(self) -> None:
        if self._redis is None:
            return
        if self._tag is None:
            self._tag = self._find_tag()
            if self._tag is None:
                return
        self._redis.zadd(REDIS_UNACKED_INDEX_KEY, {self._tag: time.time()}, xx=True)

    def _find_tag(self) -> bytes | None:
        assert self._redis is not None
        for tag, raw in self._redis.hgetall(REDIS_UNACKED_KEY).items():
            if json.loads(raw)[0].get("headers", {}).get("id") == self._task_id:
                return tag
        log.warning("no unacknowledged message for task %s; it cannot be kept invisible", self._task_id)
        return None
