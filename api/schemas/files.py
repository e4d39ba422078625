"""Uploaded dataset files (`object: "file"`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from api.schemas.common import ErrorDetail, unix
from store.models import File

FilePurpose = Literal["fine-tune"]
PURPOSES: tuple[str, ...] = ("fine-tune",)


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed", "error"]
    sha256: str
    info: dict[str, Any] | None = None
    error: ErrorDetail | None = None

    @classmethod
    def from_row(cls, row: File) -> FileObject:
        return cls(id=row.id, bytes=row.bytes, created_at=unix(row.created_at), filename=row.filename,
                   purpose=row.purpose, status=row.status, sha256=row.sha256, info=row.info,  # type: ignore[arg-type]
                   error=ErrorDetail.model_validate(row.error) if row.error else None)


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
