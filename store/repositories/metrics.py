"""Metric history (`key, value, step, epoch, split`), written in batches by the worker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from store.models import MetricPoint
from store.repositories.scoping import Page, id_cursor_page, owned_job_children


@dataclass(frozen=True)
class NewPoint:
    key: str
    value: float
    step: int
    split: str
    epoch: int | None = None


def append_many(session: Session, job_id: str, points: Iterable[NewPoint]) -> int:
    """Insert points in one statement; returns how many."""
    rows = [dict(job_id=job_id, key=p.key, value=float(p.value), step=p.step, split=p.split, epoch=p.epoch)
            for p in points]
    if rows:
        session.execute(insert(MetricPoint), rows)
    return len(rows)


def list_metrics(session: Session, owner_id: str, job_id: str, *, key: str | None = None,
                 split: str | None = None, min_step: int | None = None, max_step: int | None = None,
                 after: int | None = None, limit: int = 1000) -> Page[MetricPoint]:
    """Points in write order, filtered by key, split and inclusive step range."""
    stmt = owned_job_children(select(MetricPoint), MetricPoint, owner_id, job_id)
    if key is not None:
        stmt = stmt.where(MetricPoint.key == key)
    if split is not None:
        stmt = stmt.where(MetricPoint.split == split)
    if min_step is not None:
        stmt = stmt.where(MetricPoint.step >= min_step)
    if max_step is not None:
        stmt = stmt.where(MetricPoint.step <= max_step)
    return id_cursor_page(session, stmt, MetricPoint, after, limit)
