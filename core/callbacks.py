"""What the training loop reports, and to whom: the worker writes it to the database, the CLI to files.

Torch-free so that consumers (the worker, the API's schemas) can import the record types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Stage = str
"""A stage's name: "setup", a recipe's own stages (`core.methods.stage_names()`), "refine", "evaluate"."""
StopRequest = Literal["cancelled", "shutdown", "lease_lost"]
"""Why a callback asks a run to stop: its owner cancelled it, the worker is shutting down, or the
worker lost the job's lease."""
StopReason = Literal["completed", "failed", "cancelled", "shutdown", "lease_lost"]
"""Why a run ended (`RunResult.reason`): it finished, it raised, or a callback asked it to stop."""
Level = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True)
class Event:
    stage: Stage
    message: str
    level: Level = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    split: str  # train | validation | test | align
    epoch: int | None = None


@dataclass(frozen=True)
class Progress:
    stage: Stage
    step: int
    total_steps: int
    eta_seconds: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path  # a checkpoint directory: model.safetensors, manifest.json, trainer_state.*
    step: int
    epoch: int
    stage: Stage
    metrics: dict[str, float]
    final: bool = False


class Callback:
    """Override what you need; every hook defaults to doing nothing."""

    def on_event(self, event: Event) -> None: ...

    def on_metric(self, point: MetricPoint) -> None: ...

    def on_progress(self, progress: Progress) -> None: ...

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None: ...

    def stop_reason(self) -> StopRequest | None:
        """Checked between optimizer steps; a reason makes the run checkpoint and return it."""
        return None


class CallbackList(Callback):
    """Fans every report out to several callbacks."""

    def __init__(self, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_event(self, event: Event) -> None:
        for cb in self.callbacks:
            cb.on_event(event)

    def on_metric(self, point: MetricPoint) -> None:
        for cb in self.callbacks:
            cb.on_metric(point)

    def on_progress(self, progress: Progress) -> None:
        for cb in self.callbacks:
            cb.on_progress(progress)

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(checkpoint)

    def stop_reason(self) -> StopRequest | None:
        """The first reason a callback gives; the rest are not asked."""
        for cb in self.callbacks:
            reason = cb.stop_reason()
            if reason is not None:
                return reason
        return None
