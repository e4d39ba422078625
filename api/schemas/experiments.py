"""Experiments: one dataset, a grid of job configs, and the comparison table of their test metric."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.jobs import ShortName, TrainingRequest
from core.grid import AXES
from store.models import JobStatus

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
    seed: int = Field(description="the seed the job runs with")
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
