"""Label-free alignment objectives: multi-bandwidth RBF MMD^2 and squared distance of means."""

from __future__ import annotations

import torch

from core.alignment.sinkhorn import squared_distances

BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
CHUNK = 1024


class Stateless:
    """Objectives with nothing to checkpoint still offer the `state_dict` pair (ORCA registers every
    objective with `Run.track_state`, which saves and restores it like an optimizer)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MMD(Stateless):
    """Biased (V-statistic) MMD^2 with k = mean over bandwidths of exp(-||x - y||^2 / (2 s^2)).

    Biased so that it is >= 0 and exactly 0 for identical sets. Bandwidths s^2 = factor * median
    squared source-source distance (fixed at construction, so the objective never moves with the
    target); the source-source kernel mean is cached.
    """

    def __init__(self, source_features: torch.Tensor, source_labels: torch.Tensor | None = None) -> None:
        self.xs = source_features.detach().float()
        sample = self.xs[torch.randperm(len(self.xs), generator=torch.Generator().manual_seed(0))[:1000].to(self.xs.device)]
        d2 = squared_distances(sample, sample)
        median = float(d2[~torch.eye(len(sample), dtype=torch.bool, device=d2.device)].median()) if len(sample) > 1 else 1.0
        self.gammas = [1.0 / (2 * f * max(median, 1e-12)) for f in BANDWIDTH_FACTORS]
        total = sum(float(self._kernel(self.xs[i:i + CHUNK], self.xs).sum()) for i in range(0, len(self.xs), CHUNK))
        self.source_term = total / len(self.xs) ** 2

    def _kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d2 = squared_distances(x, y)
        return sum(torch.exp(-g * d2) for g in self.gammas) / len(self.gammas)

    def __call__(self, target_features: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        x = target_features.float()
        xs = self.xs.to(x.device)
        value = self._kernel(x, x).mean() - 2 * self._kernel(x, xs).mean() + self.source_term
        return value.to(target_features.dtype)


class MeanL2(Stateless):
    """||mean(target) - mean(source)||^2 (labels ignored): matches first moments only."""

    def __init__(self, source_features: torch.Tensor, source_labels: torch.Tensor | None = None) -> None:
        self.mean = source_features.detach().float().mean(0)

    def __call__(self, target_features: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        diff = target_features.float().mean(0) - self.mean.to(target_features.device)
        return (diff * diff).sum().to(target_features.dtype)
