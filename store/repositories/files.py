"""Uploaded dataset files. Rows point at content-addressed blobs; deleting a file is a soft delete
because jobs keep referring to it (and other files may share its blob)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from store.models import File, utcnow
from store.repositories.scoping import Page, newest_first_page, select_owned


def create(session: Session, *, owner_id: str, filename: str, purpose: str, bytes: int, sha256: str,
           status: str, info: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> File:
    file = File(owner_id=owner_id, filename=filename, purpose=purpose, bytes=bytes, sha256=sha256,
                status=status, info=info, error=error)
    session.add(file)
    session.flush()
    return file


def get(session: Session, owner_id: str, file_id: str) -> File | None:
    return session.scalar(select_owned(File, owner_id).where(File.id == file_id))


def list_files(session: Session, owner_id: str, *, after: str | None = None, limit: int = 20,
               purpose: str | None = None) -> Page[File]:
    stmt = select_owned(File, owner_id)
    if purpose is not None:
        stmt = stmt.where(File.purpose == purpose)
    return newest_first_page(session, stmt, File, after, limit)


def delete(session: Session, owner_id: str, file_id: str) -> File | None:
    """Soft-delete; returns the file, or None when the owner has no such live file."""
    file = get(session, owner_id, file_id)
    if file is not None:
        file.deleted_at = utcnow()
    return file


def blob_of(session: Session, file_id: str) -> str | None:
    """The sha256 (blob key) behind a file, for the worker, which acts on the job's behalf."""
    file = session.get(File, file_id)
    return file.sha256 if file is not None else None
