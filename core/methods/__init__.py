"""Recipes: one module per method, each owning its stages; components live elsewhere in core.

A recipe module exposes `run(ctx)` and `planned_steps(ctx)` (optimizer steps before refinement,
for progress and ETA).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import ConfigError

RECIPES = {"orca": "core.methods.orca", "finetune": "core.methods.finetune", "pare": "core.methods.pare",
           "mona": "core.methods.mona", "contrastive_pare": "core.methods.contrastive_pare"}


def recipe_for(method: str) -> ModuleType:
    if method not in RECIPES:
        raise ConfigError(f"method {method!r} is not implemented in this version; available: "
                          f"{', '.join(RECIPES)}", field="method")
    return importlib.import_module(RECIPES[method])
