"""Checkpoint records; the bytes are a tar blob whose sha256 the row keeps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Checkpoint
from store.repositories.scoping import owned_job_children


def create(session: Session, job_id: str, *, step: int, epoch: int | None, stage: str, sha256: str,
           bytes: int, metrics: dict[str, Any] | None = None, final: bool = False) -> Checkpoint:
    checkpoint = Checkpoint(job_id=job_id, step=step, epoch=epoch, stage=stage, sha256=sha256, bytes=bytes,
                            metrics=metrics, final=final)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def list_checkpoints(session: Session, owner_id: str, job_id: str) -> list[Checkpoint]:
    """Newest first (a job keeps a handful, so no paging)."""
    stmt = owned_job_children(select(Checkpoint), Checkpoint, owner_id, job_id)
    return list(session.scalars(stmt.order_by(Checkpoint.created_at.desc(), Checkpoint.step.desc())))


def get(session: Session, owner_id: str, job_id: str, checkpoint_id: str) -> Checkpoint | None:
    stmt = owned_job_children(select(Checkpoint), Checkpoint, owner_id, job_id)
    return session.scalar(stmt.where(Checkpoint.id == checkpoint_id))


def latest(session: Session, job_id: str) -> Checkpoint | None:
    """The checkpoint a resumed attempt starts from (worker side: the job is already held)."""
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return session.scalar(stmt.order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc()).limit(1))
