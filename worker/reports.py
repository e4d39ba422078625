"""The training loop's reports, written to the store, one callback per kind of report: events as they
come, metrics in batches, progress at most once a second, checkpoints as tar blobs. Writes retry
through a brief database outage (worker.retry); list the metric batcher before the checkpoint
uploader, so a checkpoint's metrics are stored before it is."""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from core.callbacks import Callback, CheckpointSaved, Event, MetricPoint, Progress
from store.blobs import Blobs
from store.repositories import checkpoints, events, jobs, metrics
from store.repositories.metrics import NewPoint
from worker.checkpoint_tar import tar_directory
from worker.heartbeat import Heartbeat
from worker.retry import in_session
from worker.stopping import StopController

log = logging.getLogger(__name__)
T = TypeVar("T")

METRIC_BATCH = 64
METRIC_FLUSH_SECONDS = 2.0
PROGRESS_SECONDS = 1.0


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Event payloads may hold paths or numpy scalars; store what JSON can say about them."""
    return json.loads(json.dumps(data, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


class StoreWriter(Callback):
    """A report callback for one job that writes through retried sessions."""

    def __init__(self, job_id: str, write_retry_seconds: float) -> None:
        self.job_id, self.write_retry_seconds = job_id, write_retry_seconds

    def _write(self, work: Callable[[Session], T]) -> T:
        return in_session(work, give_up_after=self.write_retry_seconds)


class EventWriter(StoreWriter):
    def on_event(self, event: Event) -> None:
        self._write(lambda session: events.append(session, self.job_id, stage=event.stage, message=event.message,
                                                  level=event.level, data=jsonable(event.data)))


class MetricBatcher(StoreWriter):
    """One insert per METRIC_BATCH points or METRIC_FLUSH_SECONDS, not one per point."""

    def __init__(self, job_id: str, write_retry_seconds: float) -> None:
        super().__init__(job_id, write_retry_seconds)
        self._points: list[NewPoint] = []
        self._last_flush = time.monotonic()

    def on_metric(self, point: MetricPoint) -> None:
        self._points.append(NewPoint(point.key, float(point.value), point.step, point.split, point.epoch))
        if len(self._points) >= METRIC_BATCH or time.monotonic() - self._last_flush >= METRIC_FLUSH_SECONDS:
            self.flush()

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None:
        self.flush()

    def flush(self) -> None:
        if self._points:
            points = self._points
            self._write(lambda session: metrics.append_many(session, self.job_id, points))
            self._points = []
        self._last_flush = time.monotonic()


class ProgressWriter(StoreWriter):
    """The job row's progress, at most every PROGRESS_SECONDS (and always the last step)."""

    def __init__(self, job_id: str, worker_id: str, write_retry_seconds: float) -> None:
        super().__init__(job_id, write_retry_seconds)
        self.worker_id = worker_id
        self._rate_mark: tuple[str, int, float] | None = None  # (stage, step, time) at the last write
        self._last_progress = time.monotonic()

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


class CheckpointUploader(StoreWriter):
    """Every checkpoint core saves becomes a tar blob and a row; remembers the last and the final one."""

    def __init__(self, job_id: str, blobs: Blobs, scratch: Path, write_retry_seconds: float) -> None:
        super().__init__(job_id, write_retry_seconds)
        self.blobs, self.scratch = blobs, scratch
        self.last_id: str | None = None
        self.final_id: str | None = None

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None:
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            tar_path = Path(tmp) / "checkpoint.tar"
            tar_directory(checkpoint.path, tar_path)
            ref = self.blobs.write_file(tar_path)

        def record(session: Session) -> str:
            row = checkpoints.create(session, self.job_id, step=checkpoint.step, epoch=checkpoint.epoch,
                                     stage=checkpoint.stage, sha256=ref.sha256, bytes=ref.size,
                                     metrics=jsonable(checkpoint.metrics), final=checkpoint.final)
            events.append(session, self.job_id, stage=checkpoint.stage,
                          message=f"checkpoint {row.id} saved at step {checkpoint.step}",
                          data={"checkpoint": row.id, "step": checkpoint.step, "final": checkpoint.final})
            return row.id

        self.last_id = self._write(record)
        if checkpoint.final:
            self.final_id = self.last_id


@dataclass
class JobReports:
    """The callbacks one job's run reports through, in the order they must hear each report."""

    events: EventWriter
    metrics: MetricBatcher
    progress: ProgressWriter
    checkpoints: CheckpointUploader
    stop: StopController

    @classmethod
    def for_job(cls, job_id: str, worker_id: str, blobs: Blobs, scratch: Path, heartbeat: Heartbeat,
                shutdown: threading.Event, write_retry_seconds: float) -> JobReports:
        return cls(events=EventWriter(job_id, write_retry_seconds), metrics=MetricBatcher(job_id, write_retry_seconds),
                   progress=ProgressWriter(job_id, worker_id, write_retry_seconds),
                   checkpoints=CheckpointUploader(job_id, blobs, scratch, write_retry_seconds),
                   stop=StopController(job_id, heartbeat, shutdown))

    def callbacks(self) -> list[Callback]:
        return [self.events, self.metrics, self.progress, self.checkpoints, self.stop]
