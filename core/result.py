"""How a run ended, torch-free so that the worker maps it to a job status without importing core's loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.callbacks import StopReason


@dataclass(frozen=True)
class RunResult:
    """`reason` says why the run ended. `completed`: `checkpoint_dir` is the final checkpoint and
    `summary` its metrics. `cancelled`, `shutdown`, `lease_lost`: a callback asked to stop and
    `checkpoint_dir` is the resumable checkpoint saved first. `failed`: `error` is the exception the
    run raised (a `core.errors.UserError` when the job or its data is at fault)."""

    reason: StopReason
    step: int = 0
    checkpoint_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None
