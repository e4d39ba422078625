"""An experiment's comparison table, computed from its jobs as they are now (nothing is aggregated
ahead of time): per cell of the grid, the mean and sample std of the test metric over its seeds."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from api.schemas.common import unix
from api.schemas.experiments import (CELL_PARAMS, CellParams, ExperimentCell, ExperimentGrid, ExperimentJob,
                                     ExperimentObject, ExperimentStatus)
from core.config import parse_config
from core.grid import AXES, cell_of, primary_metric
from store.models import TERMINAL_STATUSES, Experiment, Job, JobStatus


def experiment_object(row: Experiment, jobs: Sequence[Job]) -> ExperimentObject:
    configs = [parse_config(job.config) for job in jobs]
    task = next((summary.get("task") for job in jobs if (summary := _summary(job))), None)
    metric = primary_metric(configs[0], task) if configs else None
    by_cell: dict[tuple[Any, ...], list[ExperimentJob]] = {}
    for job, config in zip(jobs, configs, strict=True):
        cell = cell_of(config)
        by_cell.setdefault(tuple(cell[name] for name in CELL_PARAMS), []).append(ExperimentJob(
            id=job.id, seed=config.training.seed, status=job.status,  # type: ignore[arg-type]
            cancel_requested=job.cancel_requested, test_metric=_test_metric(job, metric)))
    points = itertools.product(*(row.grid[axis] for axis, name in AXES.items() if name in CELL_PARAMS))
    cells = [_cell(dict(zip(CELL_PARAMS, point)), by_cell.get(point, [])) for point in points]
    return ExperimentObject(
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
