"""`/v1/experiments`: one dataset × a grid of configs as one request (issue 6: the ablation study of
"What explains the success of cross-modal fine-tuning with ORCA?"); create, list, retrieve, cancel.

An experiment's jobs are ordinary jobs (`/v1/fine_tuning/jobs` shows them), made through the same
checks as a single job's; the comparison table is computed from them on every read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import CurrentOwner, IdempotencyKeyHeader, LimitDep, SessionDep, SettingsDep
from api.errors import ApiError, not_found
from api.idempotency import Once, create_once
from api.routes.jobs import JOB_RETRY_AFTER_S, _enqueue, _require_usable_file
from api.schemas.common import ListResponse
from api.schemas.experiments import ExperimentCreate, ExperimentObject
from core.config import config_from_job_request
from core.grid import expand, full_grid, size
from core.model_refs import check_job_allowed
from store.models import TERMINAL_STATUSES, Experiment, Job, Owner
from store.repositories import experiments, idempotency, jobs, quotas
from store.settings import Settings

router = APIRouter(prefix="/experiments", tags=["experiments"])
ENDPOINT = "experiments"
"""This route's name among idempotency keys."""


def _experiment_or_404(session: Session, owner: Owner, experiment_id: str) -> Experiment:
    row = experiments.get(session, owner.id, experiment_id)
    if row is None:
        raise not_found("experiment", experiment_id)
    return row


def _object(session: Session, row: Experiment) -> ExperimentObject:
    return ExperimentObject.from_rows(row, experiments.jobs_of(session, [row.id]))


@router.post("", response_model=ExperimentObject,
             responses={429: {"description": "The grid would take the owner past their queued + running jobs"}})
def create_experiment(body: ExperimentCreate, session: SessionDep, owner: CurrentOwner, settings: SettingsDep,
                      idempotency_key: IdempotencyKeyHeader = None) -> ExperimentObject:
    """Validate every cell, record the experiment and all its jobs `queued` in one transaction, then
    wake the workers. With `Idempotency-Key`, repeating the request returns the first experiment."""
    once = None if idempotency_key is None else Once(
        owner.id, ENDPOINT, idempotency_key, idempotency.fingerprint(body.model_dump(mode="json")),
        settings.idempotency_ttl_seconds)
    experiment, created = create_once(session, once, lambda: _create(session, owner, body, settings),
                                      lambda experiment_id: experiments.get(session, owner.id, experiment_id))
    rows = experiments.jobs_of(session, [experiment.id])
    if created:
        _enqueue_all(session, owner, rows, settings, once)
    return ExperimentObject.from_rows(experiment, rows)


def _create(session: Session, owner: Owner, body: ExperimentCreate, settings: Settings) -> Experiment:
    base = config_from_job_request(body.model, body.method)
    grid = full_grid(base, body.grid.model_dump())
    if (count := size(grid)) > settings.max_experiment_jobs:
        raise ApiError(422, "experiment_too_large", f"grid: {count} jobs; an experiment may make at most "
                       f"{settings.max_experiment_jobs}", "grid")
    planned = expand(body.model, body.method, grid)
    check_job_allowed(body.model, base.alignment.proxy, settings.model_roots, settings.allowed_hub_models)
    _require_usable_file(session, owner, body.training_file, "training_file")
    if body.validation_file is not None:
        _require_usable_file(session, owner, body.validation_file, "validation_file")
    if settings.max_active_jobs:
        _require_job_slots(session, owner, settings.max_active_jobs, len(planned))
    experiment = experiments.create(
        session, owner_id=owner.id, model=body.model, training_file_id=body.training_file,
        validation_file_id=body.validation_file, method=body.method, grid=grid, name=body.name, metadata=body.metadata)
    for job in planned:
        jobs.create(session, owner_id=owner.id, model=body.model, method=job.config.method,
                    config=job.config.model_dump(mode="json"), training_file_id=body.training_file,
                    validation_file_id=body.validation_file, seed=job.seed, max_attempts=settings.max_attempts,
                    experiment_id=experiment.id)
    return experiment


def _require_job_slots(session: Session, owner: Owner, max_active: int, wanted: int) -> None:
    """The whole grid fits under the owner's active-job limit, or no job is made."""
    quotas.lock(session, owner.id)
    active = quotas.active_jobs(session, owner.id)
    if active + wanted > max_active:
        raise ApiError(429, "too_many_jobs", f"this experiment's {wanted} jobs and your {active} queued or running "
                       f"ones exceed your limit of {max_active}; wait for some to finish, cancel some, or shrink "
                       "the grid", headers={"Retry-After": str(JOB_RETRY_AFTER_S)})


def _enqueue_all(session: Session, owner: Owner, rows: Sequence[Job], settings: Settings, once: Once | None) -> None:
    """Wake a worker per job, as a single job's create does. If the broker fails part-way, the whole
    experiment is cancelled (its key released by `_enqueue`), so a retry of the 503 starts it afresh
    instead of leaving half of it running."""
    try:
        for job in rows:
            _enqueue(session, owner, job, settings, once)
    except ApiError:
        for job in rows:
            jobs.request_cancel(session, owner.id, job.id)
        session.commit()
        raise


@router.get("", response_model=ListResponse[ExperimentObject])
def list_experiments(session: SessionDep, owner: CurrentOwner, limit: LimitDep,
                     after: Annotated[str | None, Query(max_length=64, description="id of the last experiment seen")]
                     = None) -> ListResponse[ExperimentObject]:
    """Newest first."""
    page = experiments.list_experiments(session, owner.id, after=after, limit=limit)
    by_experiment: dict[str, list[Job]] = {row.id: [] for row in page.items}
    for job in experiments.jobs_of(session, list(by_experiment)):
        by_experiment[job.experiment_id].append(job)  # type: ignore[index]
    data = [ExperimentObject.from_rows(row, by_experiment[row.id]) for row in page.items]
    return ListResponse[ExperimentObject].of(data, page.has_more)


@router.get("/{experiment_id}", response_model=ExperimentObject)
def get_experiment(experiment_id: str, session: SessionDep, owner: CurrentOwner) -> ExperimentObject:
    return _object(session, _experiment_or_404(session, owner, experiment_id))


@router.post("/{experiment_id}/cancel", response_model=ExperimentObject)
def cancel_experiment(experiment_id: str, session: SessionDep, owner: CurrentOwner) -> ExperimentObject:
    """Cancel every unfinished job (running ones stop at their next step); finished ones keep their results."""
    row = _experiment_or_404(session, owner, experiment_id)
    for job in experiments.jobs_of(session, [row.id]):
        if job.status not in TERMINAL_STATUSES:
            jobs.request_cancel(session, owner.id, job.id)
    session.commit()
    return _object(session, row)
