"""A job's event log: what happened, in order; the integer id is the paging cursor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from store.models import JobEvent
from store.repositories.scoping import Page, owned_job_children


def append(session: Session, job_id: str, *, stage: str, message: str, level: str = "info",
           data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, stage=stage, message=message, level=level, data=data or None)
    session.add(event)
    session.flush()
    return event


def _events_after_statement() -> Select[Any]:
    return (owned_job_children(select(JobEvent), JobEvent, bindparam("owner_id"), bindparam("job_id"))
            .where(JobEvent.id > bindparam("after")).order_by(JobEvent.id).limit(bindparam("limit")))


EVENTS_AFTER = _events_after_statement()
"""Built once with bound parameters: every follower of a job polls this (the list route, the SSE
stream), and building the statement cost as much as running it (bench/results/profile_job_get.md)."""


def list_events(session: Session, owner_id: str, job_id: str, *, after: int | None = None,
                limit: int = 20) -> Page[JobEvent]:
    """Events oldest first after cursor `after`; empty for a job the owner cannot see."""
    params = {"owner_id": owner_id, "job_id": job_id, "after": 0 if after is None else after, "limit": limit + 1}
    return Page.probed(list(session.scalars(EVENTS_AFTER, params)), limit)
