"""Submitting training: the one path by which a job and an experiment's jobs come to exist.

Both routes validate the same way (core's config schema, the model allow-list, usable files),
reserve slots under the owner's active-job limit the same way, record rows the same way and wake
workers the same way; only how many jobs a request makes differs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from api.errors import ApiError, not_found
from api.idempotency import Once
from api.schemas.jobs import TrainingRequest
from core.config import JobConfig, config_from_job_request
from core.model_refs import check_job_allowed
from store.models import Job, Owner
from store.queue import send_run_job
from store.repositories import events, files, idempotency, jobs, quotas
from store.settings import Settings

log = logging.getLogger("xmodal.api")

JOB_RETRY_AFTER_S = 60
"""A hint only: when a job finishes is not known in advance."""


def validated_config(session: Session, owner: Owner, request: TrainingRequest, settings: Settings,
                     seed: int | None = None) -> JobConfig:
    """The request's config by core's schema, its body and proxy allowed here, its files the owner's and ready."""
    config = config_from_job_request(request.model, request.method, seed)
    check_job_allowed(request.model, config.alignment.proxy, settings.model_roots, settings.allowed_hub_models)
    _require_usable_file(session, owner, request.training_file, "training_file")
    if request.validation_file is not None:
        _require_usable_file(session, owner, request.validation_file, "validation_file")
    return config


def _require_usable_file(session: Session, owner: Owner, file_id: str, param: str) -> None:
    row = files.get(session, owner.id, file_id)
    if row is None:
        raise not_found("file", file_id, param)
    if row.status != "processed":
        raise ApiError(400, "file_not_ready", f"{param}: file {file_id!r} is {row.status}, not processed", param)


def reserve_job_slots(session: Session, owner: Owner, settings: Settings, wanted: int) -> None:
    """All `wanted` jobs fit under the owner's queued + running limit, or none is made (the owner's
    row is locked until commit, so two requests cannot both take the last slot)."""
    if not settings.max_active_jobs:
        return
    quotas.lock(session, owner.id)
    active = quotas.active_jobs(session, owner.id)
    if active + wanted > settings.max_active_jobs:
        raise ApiError(429, "too_many_jobs", f"{wanted} more job(s) and your {active} queued or running ones would "
                       f"exceed your limit of {settings.max_active_jobs}; wait for some to finish or cancel some",
                       headers={"Retry-After": str(JOB_RETRY_AFTER_S)})


def record_job(session: Session, owner: Owner, request: TrainingRequest, config: JobConfig, settings: Settings, *,
               suffix: str | None = None, metadata: dict[str, str] | None = None,
               experiment_id: str | None = None) -> Job:
    """A `queued` row. Its seed, method and model columns are copied from the validated config, so
    they can never disagree with what the worker runs."""
    return jobs.create(
        session, owner_id=owner.id, model=config.body.name, method=config.method,
        config=config.model_dump(mode="json"), training_file_id=request.training_file,
        validation_file_id=request.validation_file, seed=config.training.seed, suffix=suffix,
        metadata=metadata, max_attempts=settings.max_attempts,
        experiment_id=experiment_id)


def enqueue(session: Session, owner: Owner, rows: Sequence[Job], once: Once | None, settings: Settings) -> None:
    """Wake a worker per job; the rows are committed first, so a fast worker always finds them.

    If the broker fails part-way, every row of the request is cancelled with an event saying why
    (rather than left queued forever, or half of an experiment running) and the idempotency key is
    released, so a retry of the 503 makes jobs that run."""
    try:
        for row in rows:
            send_run_job(row.id, settings)
    except Exception:
        log.exception("could not queue job(s) %s", ", ".join(row.id for row in rows))
        for row in rows:
            jobs.request_cancel(session, owner.id, row.id)
            events.append(session, row.id, stage="setup", level="error",
                          message="the job queue (broker) was unreachable; the job was not started")
        if once is not None:
            idempotency.forget(session, once.owner_id, once.endpoint, once.key)
        session.commit()
        raise ApiError(503, "queue_unavailable", "the job queue is unreachable; try again shortly") from None
