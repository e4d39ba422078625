"""A job's event log: what happened, in order; the integer id is the paging cursor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import JobEvent
from store.repositories.scoping import Page, id_cursor_page, owned_job_children


def append(session: Session, job_id: str, *, stage: str, message: str, level: str = "info",
           data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, stage=stage, message=message, level=level, data=data or None)
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, owner_id: str, job_id: str, *, after: int | None = None,
                limit: int = 20) -> Page[JobEvent]:
    """Events oldest first after cursor `after`; empty for a job the owner cannot see."""
    stmt = owned_job_children(select(JobEvent), JobEvent, owner_id, job_id)
    return id_cursor_page(session, stmt, JobEvent, after, limit)
