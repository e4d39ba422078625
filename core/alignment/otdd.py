"""OTDD (Alvarez-Melis & Fusi): debiased Sinkhorn divergence between labelled datasets.

Ground cost d^2((x, y), (x', y')) = ||x - x'||^2 + W_2^2(alpha_y, alpha_y'), p = 2, full squared
Euclidean (microsoft/otdd uses GeomLoss' half convention ||.||^2 / 2 for both terms, and no cost
normalisation: its eps acts on unnormalised costs; ours does too, so our value is twice theirs at
eps' = 2 eps). No normalisation keeps the value a fixed function of the inputs.

S(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2, OT_eps the regularised objective
(see `sinkhorn`). Everything about the source (features, label clouds, source-source label costs,
OT_eps(b, b)) is computed once at construction. Per call: target-source and target-target label
costs, two Sinkhorn solves, and a gradient by the envelope theorem (plans detached, gradient
through the feature cost).
"""

from __future__ import annotations


import torch

from core.alignment.labels import LabelCosts, split_by_label
from core.alignment.sinkhorn import sinkhorn, squared_distances

WARM_SLOTS = 32


class OTDD:
    """Alignment objective: OTDD(source, target) with the source fixed at construction."""

    def __init__(self, source_features: torch.Tensor, source_labels: torch.Tensor, *, epsilon: float = 0.1,
                 inner: str = "exact", diagonal: bool = False, warm_start: bool = True, rtol: float = 1e-5) -> None:
        self.eps, self.inner, self.diagonal, self.warm_start, self.rtol = epsilon, inner, diagonal, warm_start, rtol
        self.xs = source_features.detach().float()
        labels = source_labels.detach().to(self.xs.device)
        self.source_classes, self.source_index = torch.unique(labels, return_inverse=True)
        _, clouds = split_by_label(self.xs, labels)
        self.source_costs = LabelCosts(inner, clouds, diagonal)
        self.w_ss = self.source_costs.between(self.source_costs, symmetric=True).to(self.xs)
        n = len(self.xs)
        self.b = torch.full((n,), 1.0 / n, device=self.xs.device)
        cost = squared_distances(self.xs, self.xs)
        cost += self.w_ss[self.source_index][:, self.source_index]
        self.source_self = sinkhorn(cost, self.b, self.b, epsilon, rtol=rtol).value
        del cost
        self.radius = float(((self.xs - self.xs.mean(0)) ** 2).sum(1).mean().sqrt())
        self._warm: list[tuple[torch.Tensor, torch.Tensor]] = []  # (target mean, source potential g)
        self.last_iterations = 0

    def __call__(self, target_features: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        xs = self.xs.to(target_features.device)
        x = target_features.detach().float()
        labels = target_labels.detach().to(x.device)
        _, index = torch.unique(labels, return_inverse=True)
        _, clouds = split_by_label(x, labels)
        target_costs = LabelCosts(self.inner, clouds, self.diagonal)
        w_ts = target_costs.between(self.source_costs).to(x)
        w_tt = target_costs.between(target_costs, symmetric=True).to(x)
        m = len(x)
        a = torch.full((m,), 1.0 / m, device=x.device)

        cost = squared_distances(x, xs)
        cost += w_ts[index][:, self.source_index.to(x.device)]
        init, start = self._warm_init(x)
        cross = sinkhorn(cost, a, self.b.to(x.device), self.eps, init=init, eps_start=start, rtol=self.rtol)
        self._remember(x, cross.g)
        del cost
        self_cost = squared_distances(x, x) + w_tt[index][:, index]
        own = sinkhorn(self_cost, a, a, self.eps, rtol=self.rtol)
        self.last_iterations = cross.iterations + own.iterations
        value = cross.value - 0.5 * own.value - 0.5 * self.source_self

        # Envelope gradient: d<P, C(x)>/dx with P fixed, written without an (m, n) autograd graph.
        plan = cross.plan
        moved = plan @ xs
        feats = target_features.float()
        surrogate = (plan.sum(1) * (feats * feats).sum(1)).sum() - 2 * (feats * moved).sum()
        surrogate = surrogate - 0.5 * (own.plan * squared_distances(feats, feats)).sum()
        return (surrogate - surrogate.detach() + value).to(target_features.dtype)

    def _warm_init(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, float | None]:
        """Source potential of the stored target nearest in mean, and where eps-scaling restarts."""
        if not (self.warm_start and self._warm):
            return None, None
        mean = x.mean(0).double()
        shifts = [float(((mean - stored) ** 2).sum().sqrt()) for stored, _ in self._warm]
        best = min(range(len(shifts)), key=shifts.__getitem__)
        start = max(4 * self.eps, 8 * shifts[best] * self.radius)
        g = self._warm[best][1]
        return (torch.zeros(len(x), dtype=torch.float64, device=x.device), g), start

    def _remember(self, x: torch.Tensor, g: torch.Tensor) -> None:
        if not self.warm_start:
            return
        self._warm.append((x.mean(0).double(), g))
        del self._warm[:-WARM_SLOTS]


def otdd_value_only(source: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor],
                    epsilon: float = 0.1, inner: str = "exact") -> float:
    """OTDD between two labelled datasets as a float (convenience for tests and reports)."""
    objective = OTDD(*source, epsilon=epsilon, inner=inner, warm_start=False)
    return float(objective(*target))


__all__ = ["OTDD", "otdd_value_only"]
