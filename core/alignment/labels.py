"""Label-to-label costs W_2^2(alpha_y, alpha_y') between per-class feature clouds (no gradient).

`exact`: an exact OT solve (POT's network simplex, `ot.emd2`) between the two clouds, uniform
weights, squared Euclidean cost. `gaussian`: alpha_y ~ N(mu, Sigma) and
W^2 = ||mu - mu'||^2 + Bures(Sigma, Sigma'), with
Bures = tr S + tr S' - 2 tr (S'^1/2 S S'^1/2)^1/2. For empirical covariances S = A^T A / n and
S' = B^T B / n' (centred clouds A, B) the trace term equals the nuclear norm of A B^T / sqrt(n n'),
so no d x d matrix square root is ever formed: the cost is one (n x n') SVD, whatever d is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot
import torch

from core.alignment.sinkhorn import squared_distances


def split_by_label(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Distinct labels (sorted) and the feature cloud of each, without a Python loop over samples."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(classes)).tolist()
    return classes, list(torch.split(x[order], counts))


def exact_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Squared 2-Wasserstein distance between two uniform point clouds, by exact OT."""
    cost = squared_distances(x.double(), y.double()).cpu().numpy()
    return float(ot.emd2(ot.unif(len(x)), ot.unif(len(y)), cost, check_marginals=False, center_dual=False))


@dataclass
class GaussianStats:
    """Mean, centred cloud scaled by 1/sqrt(n), and trace of the covariance of one class."""

    mean: torch.Tensor
    scaled: torch.Tensor
    trace: float
    diag: torch.Tensor
    cov: torch.Tensor


    @classmethod
    def of(cls, x: torch.Tensor) -> GaussianStats:
        x = x.double()
        mean = x.mean(0)
        scaled = (x - mean) / len(x) ** 0.5
        diag = (scaled * scaled).sum(0)
        return cls(mean, scaled, float(diag.sum()), diag, scaled.T @ scaled)


def gaussian_w2(p: GaussianStats, q: GaussianStats, diagonal: bool = False) -> float:
    """||mu - mu'||^2 + Bures(S, S') with full (default) or diagonal covariances."""
    shift = float(((p.mean - q.mean) ** 2).sum())
    if diagonal:
        return shift + float(((p.diag.sqrt() - q.diag.sqrt()) ** 2).sum())
    if len(p.scaled) <= len(p.mean):  # eigenvalues of (A B^T)(A B^T)^T = A S' A^T, an n x n problem
        cross = float(torch.linalg.eigvalsh(p.scaled @ q.cov @ p.scaled.T).clamp_min(0).sqrt().sum())
    else:
        cross = float(torch.linalg.svdvals(p.scaled @ q.scaled.T).sum())
    return shift + max(p.trace + q.trace - 2 * cross, 0.0)


class LabelCosts:
    """Per-class summaries of one dataset and W_2^2 between its classes and another's."""

    def __init__(self, method: str, clouds: list[torch.Tensor], diagonal: bool = False) -> None:
        self.method, self.diagonal, self.clouds = method, diagonal, clouds
        self.stats = [GaussianStats.of(c) for c in clouds] if method == "gaussian" else None

    def between(self, other: LabelCosts, symmetric: bool = False) -> torch.Tensor:
        """(len(self), len(other)) float64 matrix of W_2^2 between classes; zero diagonal if symmetric."""
        n, m = len(self.clouds), len(other.clouds)
        out = np.zeros((n, m))
        for i in range(n):
            for j in range(i + 1 if symmetric else 0, m):
                out[i, j] = self._pair(other, i, j)
                if symmetric:
                    out[j, i] = out[i, j]
        return torch.from_numpy(out)

    def _pair(self, other: LabelCosts, i: int, j: int) -> float:
        if self.method == "exact":
            return exact_w2(self.clouds[i], other.clouds[j])
        return gaussian_w2(self.stats[i], other.stats[j], self.diagonal)
