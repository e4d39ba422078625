"""Turn a validated upload into train / validation / test tensors with train-only normalisation.

The validation split is held out from train (seeded) when the upload has no `x_val`; the test
split is only ever used once, at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import JobConfig, TaskType
from core.data.validate import load_npz
from core.errors import DatasetError

REGRESSION = (TaskType.dense_regression, TaskType.scalar_regression)


@dataclass(frozen=True)
class Normalisation:
    """Per-channel input stats and scalar target stats, fitted on the training split only."""

    x_mean: list[float]
    x_std: list[float]
    y_mean: float = 0.0
    y_std: float = 1.0

    def apply_x(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.x_mean, dtype=x.dtype).view(shape)
        std = torch.tensor(self.x_std, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def as_dict(self) -> dict:
        return {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class PreparedData:
    task: TaskType
    train: Split
    validation: Split | None
    test: Split | None
    normalisation: Normalisation
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    num_classes: int | None
    sha256: str


def fit_normalisation(x: np.ndarray, y: np.ndarray, task: TaskType) -> Normalisation:
    axes = (0,) + tuple(range(2, x.ndim))
    x_mean = x.mean(axis=axes, dtype=np.float64)
    x_std = x.std(axis=axes, dtype=np.float64)
    x_std = np.where(x_std < 1e-8, 1.0, x_std)
    if task not in REGRESSION:
        return Normalisation(x_mean.tolist(), x_std.tolist())
    y_std = float(y.std(dtype=np.float64))
    return Normalisation(x_mean.tolist(), x_std.tolist(), float(y.mean(dtype=np.float64)),
                         y_std if y_std > 1e-8 else 1.0)


def target_tensor(y: np.ndarray, task: TaskType) -> torch.Tensor:
    if task == TaskType.classification:
        return torch.from_numpy(np.ascontiguousarray(y)).long()
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


def _hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple:
    count = int(round(len(x) * fraction))
    if count == 0:
        return x, y, None, None
    if count >= len(x):
        raise DatasetError(f"validation_fraction {fraction} leaves no training samples", field="x")
    order = np.random.default_rng(seed).permutation(len(x))
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    return x[kept], y[kept], x[held], y[held]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_data(config: JobConfig, train_path: Path, validation_path: Path | None = None) -> PreparedData:
    """Load, split and normalise; a separate validation file overrides the upload's own x_val."""
    arrays, info = load_npz(train_path, task=config.task.value if config.task else None)
    task = TaskType(info.task_type)
    x, y = arrays["x"], arrays["y"]
    if validation_path is not None:
        val_arrays, _ = load_npz(validation_path, task=task.value)
        x_val, y_val = val_arrays["x"], val_arrays["y"]
    elif "x_val" in arrays:
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    else:
        x, y, x_val, y_val = _hold_out(x, y, config.evaluation.validation_fraction, config.training.seed)
    norm = fit_normalisation(x, y, task)

    def split(xs: np.ndarray | None, ys: np.ndarray | None) -> Split | None:
        if xs is None:
            return None
        inputs = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
        return Split(norm.apply_x(inputs), target_tensor(ys, task))

    return PreparedData(task=task, train=split(x, y), validation=split(x_val, y_val),
                        test=split(arrays.get("x_test"), arrays.get("y_test")), normalisation=norm,
                        input_shape=tuple(info.input_shape), target_shape=tuple(info.target_shape),
                        num_classes=info.num_classes, sha256=file_sha256(train_path))
