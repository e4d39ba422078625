"""Experiments: a grid of jobs on one dataset. The jobs themselves are made by `jobs.create` with
`experiment_id`; this module keeps the experiment's own row and finds its jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Experiment, Job
from store.repositories.scoping import Page, newest_first_page, select_owned


def create(session: Session, *, owner_id: str, model: str, training_file_id: str, method: dict[str, Any],
           grid: dict[str, Any], validation_file_id: str | None = None, name: str | None = None,
           metadata: dict[str, Any] | None = None) -> Experiment:
    experiment = Experiment(owner_id=owner_id, model=model, training_file_id=training_file_id,
                            validation_file_id=validation_file_id, method=method, grid=grid, name=name,
                            metadata_=metadata)
    session.add(experiment)
    session.flush()
    return experiment


def get(session: Session, owner_id: str, experiment_id: str) -> Experiment | None:
    return session.scalar(select_owned(Experiment, owner_id).where(Experiment.id == experiment_id))


def list_experiments(session: Session, owner_id: str, *, after: str | None = None, limit: int = 20) -> Page[Experiment]:
    return newest_first_page(session, select_owned(Experiment, owner_id), Experiment, after, limit)


def jobs_of(session: Session, experiment_ids: Sequence[str]) -> list[Job]:
    """The jobs of experiments already scoped to their owner, oldest first (the order they were made)."""
    if not experiment_ids:
        return []
    stmt = select(Job).where(Job.experiment_id.in_(experiment_ids)).order_by(Job.created_at, Job.id)
    return list(session.scalars(stmt))
