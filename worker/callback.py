"""The training loop's reports, written to the store: events, batched metrics, throttled progress,
checkpoints as tar blobs. `should_stop` turns a cancel request, a lost lease or a worker shutdown
into a clean stop. Writes are retried through a brief database outage (worker.retry)."""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from core.callbacks import Callback, CheckpointSaved, Event, MetricPoint, Progress
from store.blobs import BlobStore
from store.db import TRANSIENT_ERRORS
from store.repositories import checkpoints, events, jobs, metrics
from store.repositories.metrics import NewPoint
from worker.heartbeat import Heartbeat
from worker.retry import in_session

log = logging.getLogger(__name__)
T = TypeVar("T")

METRIC_BATCH = 64
METRIC_FLUSH_SECONDS = 2.0
PROGRESS_SECONDS = 1.0
CANCEL_POLL_SECONDS = 1.0


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Event payloads may hold paths or numpy scalars; store what JSON can say about them."""
    return json.loads(json.dumps(data, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def tar_directory(directory: Path, dest: Path) -> None:
    """An uncompressed tar of the directory's contents, names relative to it, in a stable order."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)


def extract_checkpoint(tar_path: Path, dest: Path) -> Path:
    """Unpack a checkpoint tar, refusing links and paths outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


class DatabaseCallback(Callback):
    def __init__(self, job_id: str, worker_id: str, blobs: BlobStore, heartbeat: Heartbeat, scratch: Path,
                 shutdown: threading.Event, write_retry_seconds: float) -> None:
        self.job_id, self.worker_id = job_id, worker_id
        self.blobs, self.heartbeat, self.scratch = blobs, heartbeat, scratch
        self.shutdown, self.write_retry_seconds = shutdown, write_retry_seconds
        self.last_checkpoint_id: str | None = None
        self.final_checkpoint_id: str | None = None
        self.cancel_requested = False
        self._points: list[NewPoint] = []
        self._rate_mark: tuple[str, int, float] | None = None  # (stage, step, time) at the last progress write
        self._last_flush = self._last_progress = self._last_cancel_poll = time.monotonic()

    def _write(self, work: Callable[[Session], T]) -> T:
        return in_session(work, give_up_after=self.write_retry_seconds)

    def on_event(self, event: Event) -> None:
        self._write(lambda session: events.append(session, self.job_id, stage=event.stage, message=event.message,
                                                  level=event.level, data=jsonable(event.data)))

    def on_metric(self, point: MetricPoint) -> None:
        self._points.append(NewPoint(point.key, float(point.value), point.step, point.split, point.epoch))
        if len(self._points) >= METRIC_BATCH or time.monotonic() - self._last_flush >= METRIC_FLUSH_SECONDS:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        if self._points:
            points = self._points
            self._write(lambda session: metrics.append_many(session, self.job_id, points))
            self._points = []
        self._last_flush = time.monotonic()

    def on_progress(self, progress: Progress) -> None:
        done = progress.total_steps > 0 and progress.step >= progress.total_steps
        now = time.monotonic()
        if not done and now - self._last_progress < PROGRESS_SECONDS:
            return
        record = {"stage": progress.stage, "step": progress.step, "total_steps": progress.total_steps,
                  "fraction": progress.fraction, "eta_seconds": progress.eta_seconds,
                  "steps_per_second": self._steps_per_second(progress, now)}
        self._last_progress = now
        self._write(lambda session: jobs.set_progress(session, self.job_id, self.worker_id, record))

    def _steps_per_second(self, progress: Progress, now: float) -> float | None:
        """Steps since the last progress write over the time since it (about PROGRESS_SECONDS, so the
        rate is fresh); None on the first write of a stage, whose steps count from a new start."""
        mark, self._rate_mark = self._rate_mark, (progress.stage, progress.step, now)
        if mark is None or mark[0] != progress.stage or progress.step < mark[1] or now <= mark[2]:
            return None
        return (progress.step - mark[1]) / (now - mark[2])

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None:
        self.flush_metrics()
        checkpoint_id = self.store_checkpoint(checkpoint.path, step=checkpoint.step, epoch=checkpoint.epoch,
                                              stage=checkpoint.stage, metrics=checkpoint.metrics,
                                              final=checkpoint.final)
        self.last_checkpoint_id = checkpoint_id
        if checkpoint.final:
            self.final_checkpoint_id = checkpoint_id

    def store_checkpoint(self, directory: Path, *, step: int, epoch: int | None, stage: str,
                         metrics: dict[str, Any], final: bool) -> str:
        """Tar the directory into a blob and record it; returns the checkpoint id."""
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            tar_path = Path(tmp) / "checkpoint.tar"
            tar_directory(directory, tar_path)
            ref = self.blobs.write_file(tar_path)

        def record(session: Session) -> str:
            row = checkpoints.create(session, self.job_id, step=step, epoch=epoch, stage=stage, sha256=ref.sha256,
                                     bytes=ref.size, metrics=jsonable(metrics), final=final)
            events.append(session, self.job_id, stage=stage, message=f"checkpoint {row.id} saved at step {step}",
                          data={"checkpoint": row.id, "step": step, "final": final})
            return row.id

        return self._write(record)

    def should_stop(self) -> bool:
        if self.heartbeat.lost or self.shutdown.is_set():
            return True
        if not self.cancel_requested and time.monotonic() - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = time.monotonic()
            try:  # a missed poll only delays a cancel; training goes on while the database is away
                self.cancel_requested = in_session(lambda s: jobs.is_cancel_requested(s, self.job_id), give_up_after=0)
            except TRANSIENT_ERRORS as exc:
                log.warning("cancel poll for %s failed: %s", self.job_id, str(exc).splitlines()[0])
        return self.cancel_requested
