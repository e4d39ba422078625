"""One job from claim to finish: the body of the `xmodal.run_job` task.

The claim decides who runs the job; from then on the worker owns the row until it finishes it,
loses the lease, or hands it back on SIGTERM (worker.preemption). How the run ended comes back from
core as a `RunResult` reason and becomes the job's status in one place (`_run`). Errors become
values on the row: a `UserError` from core keeps its code and message, anything else is
`internal_error` (details in the worker's log, not in the API).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.config import parse_config
from core.errors import UserError
from core.model_refs import check_job_allowed
from core.result import RunResult
from sqlalchemy.orm import Session

from store.blobs import blob_store
from store.logs import job_context
from store.queue import MessageVisibility
from store.repositories import checkpoints, events, files, jobs
from store.settings import Settings, get_settings
from worker.checkpoint_tar import extract_checkpoint
from worker.heartbeat import Heartbeat
from worker.preemption import ShutdownRequest
from worker.reports import JobReports
from worker.retry import in_session

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "cancelled", "requeued", "skipped", "lease_lost"]
RunStatus = Literal["succeeded", "failed", "cancelled", "requeued"]
Runner = Callable[..., RunResult]  # core.run's signature
INTERNAL_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ClaimedJob:
    """What the run needs from the row, read once at claim time."""

    job_id: str
    attempt: int
    config: dict[str, Any]
    training_sha256: str | None  # None only if the file row vanished, which foreign keys prevent
    validation_sha256: str | None
    resume_sha256: str | None


def default_runner() -> Runner:
    """core.run, imported here so that importing this module stays light (the worker's main process
    preloads it before forking its job processes: worker.app)."""
    from core import run

    return run


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def execute_job(job_id: str, settings: Settings | None = None, runner: Runner | None = None,
                task_id: str | None = None) -> Outcome:
    """Claim `job_id` and run it until it ends or goes back to the queue; returns what happened.
    `task_id` names the Celery message that brought the job, kept invisible while it runs.
    Every log record of the run carries the job id."""
    with job_context(job_id):
        return _execute(job_id, settings or get_settings(), runner, task_id)


def _execute(job_id: str, settings: Settings, runner: Runner | None, task_id: str | None) -> Outcome:
    worker_id = worker_identity()
    claimed = in_session(lambda session: _claim(session, job_id, worker_id, settings),
                         give_up_after=settings.lease_seconds)
    if claimed is None:
        log.info("job %s not claimable (taken, finished, cancelled or out of attempts)", job_id)
        return "skipped"
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    beat = MessageVisibility(settings, task_id).refresh
    with (ShutdownRequest() as shutdown,
          Heartbeat(job_id, worker_id, settings.heartbeat_seconds, settings.lease_seconds, beat) as heartbeat,
          tempfile.TemporaryDirectory(dir=settings.work_dir, prefix=f"{job_id}-") as scratch):
        reports = JobReports.for_job(job_id, worker_id, blob_store(settings), Path(scratch), heartbeat,
                                     shutdown.requested, write_retry_seconds=settings.lease_seconds)
        status, error, result = _run(claimed, reports, Path(scratch), settings, runner or default_runner())
    if status == "lease_lost":
        return "lease_lost"  # another worker holds the job now: its row is no longer ours to write
    if not in_session(lambda session: _record_end(session, job_id, worker_id, status, error, result),
                      give_up_after=settings.lease_seconds):
        log.error("job %s: lease lost before it could be finished as %s", job_id, status)
        return "lease_lost"
    log.info("job %s %s", job_id, status)
    return status


def _record_end(session: Session, job_id: str, worker_id: str, status: RunStatus,
                error: dict[str, Any] | None, result: dict[str, Any] | None) -> bool:
    """Finish the job, or hand it back to the queue; False when the lease was lost meanwhile."""
    if status == "requeued":
        if not jobs.release(session, job_id, worker_id):
            return False
        step = (result or {}).get("step")
        events.append(session, job_id, stage="setup", level="warning",
                      message=f"worker shutting down; job re-queued with its checkpoint at step {step}")
        return True
    if error is not None:
        events.append(session, job_id, stage="setup", level="error", message=error["message"],
                      data={"code": error["code"]})
    return jobs.finish(session, job_id, worker_id, status, error=error, result=result)


def _claim(session: Session, job_id: str, worker_id: str, settings: Settings) -> ClaimedJob | None:
    """Claim the job; its latest checkpoint (left by an attempt that died or was shut down) is where it resumes."""
    job = jobs.claim(session, job_id, worker_id, settings.lease_seconds)
    if job is None:
        return None
    latest = checkpoints.latest(session, job_id)
    claimed = ClaimedJob(
        job_id=job_id, attempt=job.attempt, config=dict(job.config),
        training_sha256=files.blob_of(session, job.training_file_id),
        validation_sha256=files.blob_of(session, job.validation_file_id) if job.validation_file_id else None,
        resume_sha256=latest.sha256 if latest is not None else None,
    )
    resuming = f", resuming from step {latest.step}" if latest is not None else ""
    # the worker's host and pid go to the server log only: events are shown to the job's owner
    log.info("job %s attempt %d claimed by worker %s", job_id, job.attempt, worker_id)
    events.append(session, job_id, stage="setup", message=f"attempt {job.attempt} started{resuming}")
    return claimed


def _run(claimed: ClaimedJob, reports: JobReports, scratch: Path, settings: Settings,
         runner: Runner) -> tuple[RunStatus | Literal["lease_lost"], dict[str, Any] | None, dict[str, Any] | None]:
    """Call the runner; map how it ended (or its exception) to (status, error, result)."""
    blobs = blob_store(settings)
    try:
        config = parse_config(claimed.config)
        # again here: the allow-list may have shrunk since the job was queued
        check_job_allowed(config.body.name, config.alignment.proxy, settings.model_roots, settings.allowed_hub_models)
        if claimed.training_sha256 is None:
            raise LookupError(f"the training file of job {claimed.job_id} no longer exists")
        inputs = scratch / "inputs"
        inputs.mkdir()
        # a local store links its blobs here, object storage downloads them: core reads local files
        train_path = blobs.fetch(claimed.training_sha256, inputs / "train.npz")
        validation_path = (blobs.fetch(claimed.validation_sha256, inputs / "validation.npz")
                           if claimed.validation_sha256 else None)
        resume_from = (extract_checkpoint(blobs.fetch(claimed.resume_sha256, inputs / "resume.tar"), scratch / "resume")
                       if claimed.resume_sha256 else None)
        outcome: RunResult = runner(config, train_path, scratch / "run", validation_path=validation_path,
                                    callbacks=reports.callbacks(), resume_from=resume_from,
                                    model_roots=settings.model_roots)
        reports.metrics.flush()
    except Exception as exc:  # the worker's own part failed: mapped as a failed run is
        outcome = RunResult("failed", error=exc)
    stopped = {"checkpoint": reports.checkpoints.last_id, "step": outcome.step}
    match outcome.reason:
        case "completed" if reports.checkpoints.final_id is not None:
            return "succeeded", None, _result(outcome, reports.checkpoints.final_id)
        case "completed":
            return "failed", _internal_error("the run completed without reporting its final checkpoint"), None
        case "cancelled":
            return "cancelled", None, stopped
        case "shutdown":
            return "requeued", None, stopped
        case "lease_lost":
            return "lease_lost", None, None
        case "failed" if isinstance(outcome.error, UserError):
            return "failed", outcome.error.as_dict(), None
        case "failed":
            log.error("job %s failed with an internal error", claimed.job_id, exc_info=outcome.error)
            return "failed", _internal_error(f"{type(outcome.error).__name__}: {outcome.error}"), None


def _result(outcome: RunResult, checkpoint: str) -> dict[str, Any]:
    """A succeeded job's result: the model's metrics (`summary`) and, beside them, the classical baseline
    core fitted on the same splits (`baseline`, absent when the job turned it off)."""
    summary = dict(outcome.summary)
    baseline = summary.pop("baseline", None)
    return {"summary": summary, "checkpoint": checkpoint, "step": outcome.step} | (
        {"baseline": baseline} if baseline is not None else {})


def _internal_error(message: str) -> dict[str, Any]:
    return {"code": "internal_error", "message": message[:INTERNAL_MESSAGE_CHARS], "param": None}
