"""Shared helpers for the benchmarks: dataset files, job configs, a timing callback, environment notes."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.callbacks import Callback, Progress

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"  # gitignored
RESULTS = BENCH / "results"


def dataset_path(name: str) -> Path:
    """bench/data/<name>.npz, fetched with core.data.fetch on first use."""
    path = DATA / f"{name}.npz"
    if not path.exists():
        from core.data.fetch import fetch_dataset

        fetch_dataset(name, path)
    return path


@dataclass
class StageTimer(Callback):
    """Wall-clock stamps of every `on_progress` call, grouped by stage (refine, align, ...)."""

    stamps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def on_progress(self, progress: Progress) -> None:
        self.stamps.setdefault(progress.stage, []).append((progress.step, time.perf_counter()))

    def span(self, stage: str) -> tuple[int, float]:
        """(optimizer steps, seconds) between the first and the last progress call of `stage`."""
        points = self.stamps.get(stage, [])
        if len(points) < 2:
            return 0, 0.0
        return points[-1][0] - points[0][0], points[-1][1] - points[0][1]

    def steps_by_stage(self) -> dict[str, int]:
        """Optimizer steps per stage: one `on_progress` call per step (core's `TrainContext.step_done`)."""
        return {stage: len(points) for stage, points in self.stamps.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def environment() -> str:
    return (f"torch {torch.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs visible, "
            f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start")
