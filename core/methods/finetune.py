"""Plain fine-tuning with no alignment stage: the baseline every comparison needs."""

from __future__ import annotations

from core.training.context import TrainContext
from core.training.refine import refine


def run(ctx: TrainContext) -> None:
    refine(ctx)


def planned_steps(ctx: TrainContext) -> int:
    return 0
