"""Recipes: one module per method, each owning its stages; components live elsewhere in core.

The registry is the one list of methods: `core.config` derives the method names, the job config's
sections and the stage names from it. It is torch-free, and so is every recipe module at import (a
recipe imports its torch-backed parts inside its stage functions), because the API validates job
configs without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.sections import Section

if TYPE_CHECKING:  # pragma: no cover
    from core.config import JobConfig
    from core.training.run import Run

RESERVED_STAGES = ("setup", "refine", "evaluate")


@dataclass(frozen=True)
class RecipeStage:
    """A stage before refine. `steps(config, train_size)` counts its optimizer steps (progress, ETA);
    a stage with none is skipped, and so is one that a resumed run has already finished."""

    name: str
    run: Callable[[Run], None]
    steps: Callable[[JobConfig, int], int]


@dataclass(frozen=True)
class Recipe:
    """A method: its stages, then refine (`refine(run)`; None: plain fine-tuning on the task loss),
    and the job-config sections it brings (key -> Section class), e.g. {"pare": PareConfig}."""

    name: str
    stages: tuple[RecipeStage, ...] = ()
    refine: Callable[[Run], None] | None = None
    sections: Mapping[str, type[Section]] = field(default_factory=dict)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)


_recipes: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a method; its name, stage names and sections must not clash with what is registered."""
    if recipe.name in _recipes:
        raise ValueError(f"method {recipe.name!r} is already registered")
    clashing = [name for name in recipe.stage_names if name in RESERVED_STAGES]
    if clashing:
        raise ValueError(f"stage names {clashing} are reserved")
    sections = sections_of(_recipes.values())
    for key, section in recipe.sections.items():
        if sections.get(key, section) is not section:
            raise ValueError(f"config section {key!r} is already declared by another method")
    _recipes[recipe.name] = recipe
    return recipe


def unregister(name: str) -> None:
    """Remove a method (a test's toy method, once its test is over)."""
    del _recipes[name]


def recipes() -> Mapping[str, Recipe]:
    return MappingProxyType(_recipes)


def recipe_for(method: str) -> Recipe:
    if method not in _recipes:
        raise ConfigError(f"method {method!r} is not implemented in this version; available: "
                          f"{', '.join(_recipes)}", field="method")
    return _recipes[method]


def sections_of(chosen: Iterable[Recipe]) -> dict[str, type[Section]]:
    """Every section the given recipes bring, in registration order; a section two recipes share once."""
    found: dict[str, type[Section]] = {}
    for recipe in chosen:
        found.update(recipe.sections)
    return found


def stage_names() -> tuple[str, ...]:
    """Every stage a run can report: set-up, the recipes' own stages, refine and the final evaluation."""
    own = dict.fromkeys(name for recipe in _recipes.values() for name in recipe.stage_names)
    return ("setup", *own, "refine", "evaluate")


# the built-in methods register themselves, in the order the method list shows them
from core.methods import orca, finetune, pare, mona, contrastive_pare  # noqa: E402,F401,I001
