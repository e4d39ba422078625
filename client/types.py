"""What the API returns, as frozen dataclasses mirroring `api/schemas` (minus the constant `object`).

Fields the server adds later are ignored, so an older client keeps working against a newer API.
Timestamps are unix seconds, as in the OpenAI API.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

T = TypeVar("T")
Record = TypeVar("Record", bound="_Record")


class _Record:
    """`from_dict` for a dataclass whose fields are plain JSON values."""

    @classmethod
    def from_dict(cls: type[Record], data: dict[str, Any]) -> Record:
        names = {field.name for field in fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class ErrorInfo(_Record):
    """Why a job failed: `code` (`invalid_dataset`, `max_attempts`, …), message, offending field."""

    code: str
    message: str
    param: str | None = None


def _error(data: dict[str, Any] | None) -> ErrorInfo | None:
    return ErrorInfo.from_dict(data) if data else None


@dataclass(frozen=True)
class File(_Record):
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    sha256: str
    info: dict[str, Any] | None = None
    error: ErrorInfo | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> File:
        return super().from_dict({**data, "error": _error(data.get("error"))})


@dataclass(frozen=True)
class FileDeleted(_Record):
    id: str
    deleted: bool


@dataclass(frozen=True)
class JobProgress(_Record):
    stage: str | None = None
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    eta_seconds: float | None = None


@dataclass(frozen=True)
class Baseline(_Record):
    """The job's classical baseline, fitted on the job's own splits (`result.baseline`): compare its
    `test` / `validation` metrics (lower is better, as the model's) with `result.summary`'s."""

    method: str
    params: dict[str, float]
    metric: str
    selection: str
    validation: dict[str, float] | None
    test: dict[str, float] | None
    seconds: float


@dataclass(frozen=True)
class Job(_Record):
    id: str
    status: JobStatus
    model: str
    method: dict[str, Any]
    training_file: str
    validation_file: str | None
    seed: int | None
    suffix: str | None
    metadata: dict[str, str] | None
    progress: JobProgress | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_at: int
    started_at: int | None
    finished_at: int | None
    error: ErrorInfo | None
    result: dict[str, Any] | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        progress = JobProgress.from_dict(data["progress"]) if data.get("progress") else None
        return super().from_dict({**data, "progress": progress, "error": _error(data.get("error"))})

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def baseline(self) -> Baseline | None:
        """The classical baseline of a succeeded job (None before, or when the job turned it off)."""
        found = (self.result or {}).get("baseline")
        return Baseline.from_dict(found) if found else None


@dataclass(frozen=True)
class Event(_Record):
    id: int
    created_at: int
    level: str
    stage: str
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Metric(_Record):
    id: int
    key: str
    value: float
    step: int
    epoch: int | None
    split: str
    created_at: int


@dataclass(frozen=True)
class Checkpoint(_Record):
    id: str
    fine_tuning_job_id: str
    created_at: int
    step: int
    epoch: int | None
    stage: str
    final: bool
    metrics: dict[str, Any] | None
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ask again with `after=last_id` while `has_more`."""

    data: list[T]
    has_more: bool
    first_id: str | int | None = None
    last_id: str | int | None = None


@dataclass(frozen=True)
class Download:
    """A finished download: where it is, its size and verified sha256, and the offset it resumed from."""

    path: Path
    bytes: int
    sha256: str
    resumed_from: int = 0
