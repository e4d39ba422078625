"""Plain fine-tuning with no alignment stage: the baseline every comparison needs."""

from __future__ import annotations

from core.methods import Recipe, register

RECIPE = register(Recipe("finetune"))
