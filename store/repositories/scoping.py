"""The one place that decides what an owner may see.

Files, jobs and experiments carry `owner_id`; events, metric points and checkpoints belong to a job
and are visible through their job's owner. Soft-deleted files are invisible to everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BindParameter, Select, and_, or_, select
from sqlalchemy.orm import Session

from store.models import Checkpoint, Experiment, File, Job, JobEvent, MetricPoint

T = TypeVar("T")
OwnedModel = type[File] | type[Job] | type[Experiment]
JobChild = type[JobEvent] | type[MetricPoint] | type[Checkpoint]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; `has_more` says whether asking again with `after=items[-1]` finds more."""

    items: list[T]
    has_more: bool

    @classmethod
    def probed(cls, rows: list[T], limit: int) -> Page[T]:
        """The page from `rows` fetched with LIMIT `limit` + 1: the extra row only says there are more."""
        return cls(rows[:limit], len(rows) > limit)


def owned(stmt: Select[Any], model: OwnedModel, owner_id: str | BindParameter[str]) -> Select[Any]:
    """Restrict a query on an owned model to `owner_id`'s live rows."""
    stmt = stmt.where(model.owner_id == owner_id)
    if model is File:
        stmt = stmt.where(File.deleted_at.is_(None))
    return stmt


def owned_job_children(stmt: Select[Any], model: JobChild, owner_id: str | BindParameter[str],
                       job_id: str | BindParameter[str]) -> Select[Any]:
    """Restrict a query on a job's child rows to that job, and to the job only if `owner_id` owns it."""
    return stmt.join(Job, Job.id == model.job_id).where(model.job_id == job_id, Job.owner_id == owner_id)


def newest_first_page(
    session: Session, stmt: Select[Any], model: OwnedModel, after: str | None, limit: int
) -> Page[Any]:
    """Page `stmt` newest first by (created_at, id); `after` is the id of the last item already seen.

    An `after` the query cannot see (unknown, or someone else's) yields an empty page rather than
    revealing whether it exists.
    """
    if after is not None:
        anchor = session.execute(stmt.with_only_columns(model.created_at).where(model.id == after)).scalar()
        if anchor is None:
            return Page([], False)
        stmt = stmt.where(
            or_(model.created_at < anchor, and_(model.created_at == anchor, model.id < after))
        )
    rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    return Page.probed(rows, limit)


def id_cursor_page(session: Session, stmt: Select[Any], model: type[JobEvent] | type[MetricPoint],
                   after: int | None, limit: int) -> Page[Any]:
    """Page `stmt` oldest first by integer id: clients poll with the last id they saw."""
    if after is not None:
        stmt = stmt.where(model.id > after)
    rows = list(session.scalars(stmt.order_by(model.id).limit(limit + 1)))
    return Page.probed(rows, limit)


def select_owned(model: OwnedModel, owner_id: str) -> Select[Any]:
    return owned(select(model), model, owner_id)
