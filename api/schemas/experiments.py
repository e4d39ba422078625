"""Experiments: one dataset, a grid of job configs, and the comparison table of their test metric."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import unix
from api.schemas.jobs import ShortName, TrainingRequest
from core.config import parse_config
from core.grid import AXES, cell_of, primary_metric
from store.models import TERMINAL_STATUSES, Experiment, Job, JobStatus

ExperimentStatus = Literal["running", "succeeded", "failed", "cancelled"]
T = TypeVar("T")
Axis = Annotated[list[T], Field(min_length=1, max_length=1000)]
CELL_PARAMS = [name for name in AXES.values() if name != "seed"]


class ExperimentGrid(BaseModel):
    """Values to try on each axis of the ORCA ablation; an axis left out stays at the base `method`'s value.
    Every combination of methods × alignment_epochs × freeze × pretrained is a cell, run once per seed."""

    model_config = ConfigDict(extra="forbid")

    methods: Axis[ShortName] | None = None
    alignment_epochs: Axis[int] | None = None
    freeze: Axis[ShortName] | None = None
    pretrained: Axis[bool] | None = None
    seeds: Axis[int] | None = None

    @field_validator("*")
    @classmethod
    def _distinct(cls, values: list[Any] | None) -> list[Any] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("values must be distinct")
        return values


class ExperimentCreate(TrainingRequest):
    """`POST /v1/experiments`: `method` is the base config each cell varies along the grid; every
    cell's config is validated with the job schema before any job is made."""

    grid: ExperimentGrid = Field(default_factory=ExperimentGrid)
    name: ShortName | None = None


class CellParams(BaseModel):
    method: str
    alignment_epochs: int
    freeze: str
    pretrained: bool


class ExperimentJob(BaseModel):
    id: str
    seed: int | None
    status: JobStatus
    cancel_requested: bool
    test_metric: float | None = Field(description="the experiment's metric on the test split; null until succeeded")


class ExperimentCell(BaseModel):
    """One row of the comparison table: mean ± std of the test metric over the cell's succeeded seeds."""

    params: CellParams
    status: ExperimentStatus
    mean: float | None
    std: float | None = Field(description="sample standard deviation (n − 1); null below two values")
    n: int = Field(description="jobs with a test metric")
    jobs: list[ExperimentJob]


class ExperimentObject(BaseModel):
    id: str
    object: Literal["experiment"] = "experiment"
    name: str | None
    status: ExperimentStatus = Field(description="running while any job is unfinished")
    model: str
    training_file: str
    validation_file: str | None
    method: dict[str, Any]
    grid: ExperimentGrid = Field(description="every axis, defaults filled in")
    metadata: dict[str, str] | None
    created_at: int
    metric: str | None = Field(description="the compared test metric (lower is better); null until the task is known")
    job_counts: dict[JobStatus, int]
    cells: list[ExperimentCell]

    @classmethod
    def from_rows(cls, row: Experiment, jobs: Sequence[Job]) -> ExperimentObject:
        """The table from the jobs as they are now: nothing is aggregated ahead of time."""
        configs = [parse_config(job.config) for job in jobs]
        task = next((summary.get("task") for job in jobs if (summary := _summary(job))), None)
        metric = primary_metric(configs[0], task) if configs else None
        by_cell: dict[tuple[Any, ...], list[ExperimentJob]] = {}
        for job, config in zip(jobs, configs, strict=True):
            cell = cell_of(config)
            by_cell.setdefault(tuple(cell[name] for name in CELL_PARAMS), []).append(ExperimentJob(
                id=job.id, seed=job.seed, status=job.status,  # type: ignore[arg-type]
                cancel_requested=job.cancel_requested, test_metric=_test_metric(job, metric)))
        points = itertools.product(*(row.grid[axis] for axis, name in AXES.items() if name in CELL_PARAMS))
        cells = [_cell(dict(zip(CELL_PARAMS, point)), by_cell.get(point, [])) for point in points]
        return cls(
            id=row.id, name=row.name, status=_status(job.status for job in jobs), model=row.model,
            training_file=row.training_file_id, validation_file=row.validation_file_id, method=row.method,
            grid=ExperimentGrid.model_validate(row.grid), metadata=row.metadata_, created_at=unix(row.created_at),
            metric=metric, cells=cells,
            job_counts={status: sum(job.status == status for job in jobs) for status in get_args(JobStatus)},
        )


def _summary(job: Job) -> dict[str, Any] | None:
    return (job.result or {}).get("summary") if job.status == "succeeded" else None


def _test_metric(job: Job, metric: str | None) -> float | None:
    value = ((_summary(job) or {}).get("test") or {}).get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cell(params: dict[str, Any], jobs: list[ExperimentJob]) -> ExperimentCell:
    values = [job.test_metric for job in jobs if job.test_metric is not None]
    return ExperimentCell(
        params=CellParams.model_validate(params), status=_status(job.status for job in jobs),
        mean=statistics.fmean(values) if values else None,
        std=statistics.stdev(values) if len(values) > 1 else None, n=len(values), jobs=jobs)


def _status(statuses: Iterable[str]) -> ExperimentStatus:
    """Running while any job is unfinished; then succeeded only if all did, cancelled if any was."""
    seen = set(statuses)
    if seen - set(TERMINAL_STATUSES):
        return "running"
    if seen <= {"succeeded"}:
        return "succeeded"
    return "cancelled" if "cancelled" in seen else "failed"
