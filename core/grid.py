"""An experiment's grid: one job request varied along the axes of the ablation study "What explains
the success of cross-modal fine-tuning with ORCA?" — method, alignment epochs, freezing,
pre-training — with each cell repeated over seeds.

Torch-free, so the API validates every cell with the job schema before it makes a single job.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.config import SELECTION_METRIC, JobConfig, TaskType, config_from_job_request
from core.errors import ConfigError

AXES = {"methods": "method", "alignment_epochs": "alignment_epochs", "freeze": "freeze",
        "pretrained": "pretrained", "seeds": "seed"}
"""Grid field → the parameter it sets. Seeds repeat a cell; the other four make the cells."""

_AXIS_OF_FIELD = {"method.type": "methods", "alignment.epochs": "alignment_epochs", "freeze": "freeze",
                  "body.pretrained": "pretrained", "training.seed": "seeds"}


@dataclass(frozen=True)
class GridJob:
    """One job of the grid: its cell's parameters (no seed), its seed, its validated config."""

    cell: dict[str, Any]
    seed: int
    config: JobConfig


def position(config: JobConfig) -> dict[str, Any]:
    """Where a config sits on every axis, keyed by parameter name."""
    return {"method": config.method, "alignment_epochs": config.alignment.epochs, "freeze": config.freeze,
            "pretrained": config.body.pretrained, "seed": config.training.seed}


def cell_of(config: JobConfig) -> dict[str, Any]:
    """The cell a job's config belongs to: its position less the seed."""
    return {name: value for name, value in position(config).items() if name != "seed"}


def full_grid(base: JobConfig, grid: Mapping[str, Sequence[Any] | None]) -> dict[str, list[Any]]:
    """Every axis's values; an axis not given stays at the base config's value."""
    at = position(base)
    return {axis: list(grid.get(axis) or [at[name]]) for axis, name in AXES.items()}


def size(grid: Mapping[str, Sequence[Any]]) -> int:
    count = 1
    for values in grid.values():
        count *= len(values)
    return count


def expand(model: str, method: dict[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[GridJob]:
    """Validate every point of `grid` (from `full_grid`) around the base `method` as a job config.

    The base must already be valid (`config_from_job_request`), so a failure here is a grid value's:
    the ConfigError names that grid field, e.g. `grid.alignment_epochs`.
    """
    kind = method.get("type", "orca")
    sections: dict[str, Any] = method.get(kind) or {}
    made = []
    for values in itertools.product(*(grid[axis] for axis in AXES)):
        point = dict(zip(AXES.values(), values))
        varied = {**sections, "freeze": point["freeze"],
                  "alignment": {**sections.get("alignment", {}), "epochs": point["alignment_epochs"]},
                  "body": {**sections.get("body", {}), "pretrained": point["pretrained"]}}
        try:
            config = config_from_job_request(model, {"type": point["method"], point["method"]: varied}, point["seed"])
        except ConfigError as exc:
            raise _grid_error(exc, point) from None
        made.append(GridJob({name: point[name] for name in AXES.values() if name != "seed"}, point["seed"], config))
    return made


def _grid_error(exc: ConfigError, point: dict[str, Any]) -> ConfigError:
    field = exc.field or ""
    if field != "method.type" and field.startswith("method."):
        field = field.split(".", 2)[-1]  # method.<type>.alignment.epochs → alignment.epochs
    axis = _AXIS_OF_FIELD.get(field)
    if axis is None:
        return ConfigError(f"{point}: {exc.message}", field="grid")
    return ConfigError(f"{point[AXES[axis]]!r}: {exc.message}", field=f"grid.{axis}")


def primary_metric(config: JobConfig, task: str | None) -> str | None:
    """The test metric to compare: the config's selection metric, else its task's (None: task not yet known)."""
    if config.evaluation.metric:
        return config.evaluation.metric
    task = config.task.value if config.task is not None else task
    return SELECTION_METRIC[TaskType(task)] if task else None
