"""`/v1/experiments`: one dataset × a grid of configs as one request (issue 6: the ablation study of
"What explains the success of cross-modal fine-tuning with ORCA?"); create, list, retrieve, cancel.

An experiment's jobs are ordinary jobs (`/v1/fine_tuning/jobs` shows them), made through the same
checks as a single job's; the comparison table is computed from them on every read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import CurrentOwner, IdempotencyKeyHeader, LimitDep, SessionDep, SettingsDep
from api.errors import ApiError, not_found
from api.experiment_table import experiment_object
from api.idempotency import Once, create_once
from api.schemas.common import ListResponse
from api.schemas.experiments import ExperimentCreate, ExperimentObject
from api.submission import enqueue, record_job, reserve_job_slots, validated_config
from core.grid import expand, full_grid, size
from store.models import TERMINAL_STATUSES, Experiment, Job, Owner
from store.repositories import experiments, idempotency, jobs
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
    return experiment_object(row, experiments.jobs_of(session, [row.id]))


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
        enqueue(session, owner, rows, once, settings)
    return experiment_object(experiment, rows)


def _create(session: Session, owner: Owner, body: ExperimentCreate, settings: Settings) -> Experiment:
    base = validated_config(session, owner, body, settings)
    grid = full_grid(base, body.grid.model_dump())
    if (count := size(grid)) > settings.max_experiment_jobs:
        raise ApiError(422, "experiment_too_large", f"grid: {count} jobs; an experiment may make at most "
                       f"{settings.max_experiment_jobs}", "grid")
    planned = expand(body.model, body.method, grid)
    reserve_job_slots(session, owner, settings, wanted=len(planned))
    experiment = experiments.create(
        session, owner_id=owner.id, model=body.model, training_file_id=body.training_file,
        validation_file_id=body.validation_file, method=body.method, grid=grid, name=body.name, metadata=body.metadata)
    for job in planned:
        record_job(session, owner, body, job.config, settings, experiment_id=experiment.id)
    return experiment


@router.get("", response_model=ListResponse[ExperimentObject])
def list_experiments(session: SessionDep, owner: CurrentOwner, limit: LimitDep,
                     after: Annotated[str | None, Query(max_length=64, description="id of the last experiment seen")]
                     = None) -> ListResponse[ExperimentObject]:
    """Newest first."""
    page = experiments.list_experiments(session, owner.id, after=after, limit=limit)
    by_experiment: dict[str, list[Job]] = {row.id: [] for row in page.items}
    for job in experiments.jobs_of(session, list(by_experiment)):
        by_experiment[job.experiment_id].append(job)  # type: ignore[index]
    data = [experiment_object(row, by_experiment[row.id]) for row in page.items]
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
