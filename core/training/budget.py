"""How many refine steps a job gets: `training.epochs` as a number of epochs, or `auto` from the data size.

`auto` follows hosted fine-tuning APIs' `n_epochs: auto` (OpenAI's rule: 3 epochs, raised for small
sets so that training sees enough examples, lowered for large ones so that it stays affordable, and
never below one epoch), counted in optimizer steps because steps, not epochs, are what a small set
lacks: 3 epochs of 96 samples at batch 32 are 9 steps, far too few for a body to adapt. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.config import TrainingConfig

AUTO_EPOCHS = 3  # the usual number of passes when the set is neither tiny nor huge
MIN_AUTO_STEPS = 300  # floor: enough optimizer steps for embedder, body and head to adapt on a tiny set
MAX_AUTO_STEPS = 3000  # cap: a large set trains for fewer epochs (but at least one), as with n_epochs auto


def steps_per_epoch(train_size: int, batch_size: int, grad_accumulation: int) -> int:
    return math.ceil(math.ceil(train_size / batch_size) / grad_accumulation)


@dataclass(frozen=True)
class RefineBudget:
    """The refine stage's budget: `steps` optimizer steps over at most `epochs` epochs, and why."""

    steps: int
    epochs: int
    steps_per_epoch: int
    rule: str

    def describe(self, train_size: int, batch_size: int) -> str:
        return (f"refine budget: {self.steps} optimizer steps ({self.epochs} epochs of {self.steps_per_epoch} "
                f"steps: {train_size} train samples, batch {batch_size}); {self.rule}")


def refine_budget(training: TrainingConfig, train_size: int) -> RefineBudget:
    """Resolve `training.epochs` (an integer or `auto`) and `max_steps` into steps and epochs."""
    per_epoch = steps_per_epoch(train_size, training.batch_size, training.grad_accumulation)
    if training.epochs == "auto":
        wanted = AUTO_EPOCHS * per_epoch
        steps = max(per_epoch, min(MAX_AUTO_STEPS, max(MIN_AUTO_STEPS, wanted)))
        epochs = math.ceil(steps / per_epoch)
        rule = (f"epochs auto: {AUTO_EPOCHS} epochs ({wanted} steps) within a floor of {MIN_AUTO_STEPS} and a cap "
                f"of {MAX_AUTO_STEPS} steps, at least one epoch")
    else:
        epochs = training.epochs
        steps = epochs * per_epoch
        rule = f"epochs {training.epochs} (as configured)"
    if training.max_steps and training.max_steps < steps:
        steps, rule = training.max_steps, f"{rule}; capped by max_steps {training.max_steps}"
    return RefineBudget(steps=steps, epochs=epochs, steps_per_epoch=per_epoch, rule=rule)
