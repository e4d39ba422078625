"""Distribution-alignment objectives ORCA trains the embedder with (OTDD, MMD, mean L2)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from core.alignment.moments import MMD, MeanL2
from core.alignment.otdd import OTDD
from core.errors import ConfigError

OBJECTIVES = ("otdd_exact", "otdd_gaussian", "mmd", "l2")


class AlignmentObjective(Protocol):
    def __call__(self, target_features: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        """Scalar, differentiable w.r.t. target_features (M, d); target_labels (M,) int64."""
        ...

    def state_dict(self) -> dict:
        """What a checkpoint needs for a bit-identical resume (tensors / plain lists; may be empty)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


def build_objective(name: str, source_features: torch.Tensor, source_labels: torch.Tensor, *,
                    epsilon: float = 0.1, **otdd_options) -> AlignmentObjective:
    """The objective `name` against a fixed source; every source-only quantity is computed here, once.

    `otdd_options` go to `OTDD` (e.g. `label_solver="emd"`, `label_epsilon`, `rtol`, `warm_start`).
    """
    if name == "otdd_exact":
        return OTDD(source_features, source_labels, epsilon=epsilon, inner="exact", **otdd_options)
    if name == "otdd_gaussian":
        return OTDD(source_features, source_labels, epsilon=epsilon, inner="gaussian", **otdd_options)
    if name == "mmd":
        return MMD(source_features, source_labels)
    if name == "l2":
        return MeanL2(source_features, source_labels)
    raise ConfigError(f"unknown alignment objective {name!r}; expected one of {', '.join(OBJECTIVES)}",
                      field="alignment.objective")


def kmeans_pseudo_labels(targets: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """(N,) int64 k-means cluster of each flattened target row; k is clipped to the distinct rows."""
    from sklearn.cluster import KMeans

    rows = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    k = max(1, min(k, len(np.unique(rows, axis=0))))
    if k == 1:
        return np.zeros(len(rows), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(rows).astype(np.int64)


__all__ = ["AlignmentObjective", "MMD", "MeanL2", "OBJECTIVES", "OTDD", "build_objective", "kmeans_pseudo_labels"]
