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

Single target label (how ORCA calls it: one target class at a time): the label term then is
W^2(t, y_j), a constant per source column. Entropic OT with cost C + 1 w^T has the same plan as
with C (the dual potential g absorbs w) and value OT_eps(C) + <b, w>, since every plan has column
marginal b. So the cross Sinkhorn runs on the plain feature cost and the label term is added as
sum_j b_j W^2(t, y_j); the target self term has no label part at all (W^2(t, t) = 0).
"""

from __future__ import annotations


import torch

from core.alignment.labels import LabelCosts, split_by_label
from core.alignment.sinkhorn import sinkhorn, squared_distances

WARM_SLOTS = 32


class OTDD:
    """Alignment objective: OTDD(source, target) with the source fixed at construction.

    `label_solver` ("sinkhorn" | "emd") and `label_epsilon` (default: `epsilon`) choose how the
    `exact` label-to-label W^2 is solved; see `core.alignment.labels`.
    """

    def __init__(self, source_features: torch.Tensor, source_labels: torch.Tensor, *, epsilon: float = 0.1,
                 inner: str = "exact", diagonal: bool = False, warm_start: bool = True, rtol: float = 1e-5,
                 label_solver: str = "sinkhorn", label_epsilon: float | None = None) -> None:
        self.eps, self.inner, self.diagonal, self.warm_start, self.rtol = epsilon, inner, diagonal, warm_start, rtol
        self.label_options = {"label_solver": label_solver,
                              "label_epsilon": epsilon if label_epsilon is None else label_epsilon, "rtol": rtol}
        labels = source_labels.detach().to(source_features.device)
        self.source_classes, index = torch.unique(labels, return_inverse=True)
        order = torch.argsort(index, stable=True)  # class blocks contiguous (the objective is order-free)
        self.xs, self.source_index = source_features.detach().float()[order], index[order]
        self.class_sizes = torch.bincount(self.source_index, minlength=len(self.source_classes)).tolist()
        clouds = list(torch.split(self.xs, self.class_sizes))
        self.source_costs = LabelCosts(inner, clouds, diagonal, **self.label_options)
        self.w_ss = self.source_costs.between(self.source_costs, symmetric=True).to(self.xs)
        n = len(self.xs)
        self.b = torch.full((n,), 1.0 / n, device=self.xs.device)
        self.class_share = torch.tensor(self.class_sizes, dtype=torch.float64) / n  # <b, w[index]> = share @ w
        cost = squared_distances(self.xs, self.xs)
        cost += self.w_ss[self.source_index][:, self.source_index]
        self.source_self = sinkhorn(cost, self.b, self.b, epsilon, rtol=rtol, symmetric=True).value
        del cost
        self.radius = float(((self.xs - self.xs.mean(0)) ** 2).sum(1).mean().sqrt())
        # Recent calls: target mean, source potential g of the cross problem, single-label call?,
        # source-side potentials of the batched label problems (empty when not entropic / single).
        self._warm: list[tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor]] = []
        self.last_iterations = 0

    def __call__(self, target_features: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        xs = self.xs.to(target_features.device)
        x = target_features.detach().float()
        labels = target_labels.detach().to(x.device)
        _, index = torch.unique(labels, return_inverse=True)
        _, clouds = split_by_label(x, labels)
        target_costs = LabelCosts(self.inner, clouds, self.diagonal, **self.label_options)
        single = len(clouds) == 1
        m = len(x)
        a = torch.full((m,), 1.0 / m, device=x.device)
        warm = self._nearest(x, single)
        start = self._eps_start(warm)

        self_cost = squared_distances(x, x)
        if not single:
            self_cost += target_costs.between(target_costs, symmetric=True).to(x)[index][:, index]
        own = sinkhorn(self_cost, a, a, self.eps, rtol=self.rtol, symmetric=True)
        del self_cost

        cost = squared_distances(x, xs)
        if single:  # label term = per-column constant: same plan, value + <b, w> (module docstring)
            label_g = None
            if target_costs.entropic:
                if self.label_options["label_epsilon"] == self.eps:
                    target_costs.set_self_terms(torch.tensor([own.value]))  # the same problem, solved above
                w_ts = target_costs.between(self.source_costs, cost=self._class_blocks(cost),
                                            init_g=warm[3] if warm else None, eps_start=start)
                label_g = target_costs.last_potentials
            else:
                w_ts = target_costs.between(self.source_costs)
            label_term = float(self.class_share @ w_ts[0])
        else:
            label_g, label_term = None, 0.0
            cost += target_costs.between(self.source_costs).to(x)[index][:, self.source_index.to(x.device)]
        init = (torch.zeros(m, dtype=torch.float64, device=x.device), warm[1].to(x.device)) if warm else None
        cross = sinkhorn(cost, a, self.b.to(x.device), self.eps, init=init, eps_start=start, rtol=self.rtol)
        del cost
        self._remember(x, cross.g, single, label_g)
        self.last_iterations = cross.iterations + own.iterations
        value = cross.value + label_term - 0.5 * own.value - 0.5 * self.source_self

        # Envelope gradient: d<P, C(x)>/dx with P fixed, written without an (m, n) autograd graph.
        plan = cross.plan
        moved = plan @ xs
        feats = target_features.float()
        surrogate = (plan.sum(1) * (feats * feats).sum(1)).sum() - 2 * (feats * moved).sum()
        surrogate = surrogate - 0.5 * (own.plan * squared_distances(feats, feats)).sum()
        return (surrogate - surrogate.detach() + value).to(target_features.dtype)

    def _class_blocks(self, cost: torch.Tensor) -> torch.Tensor:
        """(classes, m, largest class) per-source-class column blocks of `cost`, +inf padded."""
        sizes, m = self.class_sizes, len(cost)
        if min(sizes) == max(sizes):
            return cost.view(m, len(sizes), sizes[0]).transpose(0, 1).contiguous()
        blocks = cost.new_full((len(sizes), m, max(sizes)), float("inf"))
        for k, (block, size) in enumerate(zip(torch.split(cost, sizes, dim=1), sizes)):
            blocks[k, :, :size] = block
        return blocks

    # ---- warm start (changes results only within the solver tolerance; saved for exact resume) ----
    def _nearest(self, x: torch.Tensor, single: bool) -> tuple | None:
        """The stored call of the same kind whose target mean is nearest, with its shift from x."""
        stored = [entry for entry in self._warm if entry[2] == single]
        if not (self.warm_start and stored):
            return None
        mean = x.mean(0).double()
        shifts = [float(((mean - entry[0].to(mean)) ** 2).sum().sqrt()) for entry in stored]
        best = min(range(len(shifts)), key=shifts.__getitem__)
        return (shifts[best], *stored[best][1:])

    def _eps_start(self, warm: tuple | None) -> float | None:
        """Where eps-scaling restarts from a stored potential: grows with how far the target moved."""
        return None if warm is None else max(4 * self.eps, 8 * warm[0] * self.radius)

    def _remember(self, x: torch.Tensor, g: torch.Tensor, single: bool, label_g: torch.Tensor | None) -> None:
        if not self.warm_start:
            return
        empty = torch.zeros(0, dtype=torch.float64, device=g.device)
        self._warm.append((x.mean(0).double(), g, single, empty if label_g is None else label_g))
        del self._warm[:-WARM_SLOTS]

    def state_dict(self) -> dict:
        """The warm-start store (tensors and plain lists only: saved with safetensors + JSON)."""
        return {"means": [entry[0].cpu() for entry in self._warm],
                "potentials": [entry[1].cpu() for entry in self._warm],
                "single_label": [bool(entry[2]) for entry in self._warm],
                "label_potentials": [entry[3].cpu() for entry in self._warm]}

    def load_state_dict(self, state: dict) -> None:
        device = self.xs.device
        self._warm = [(mean.to(device, torch.float64), g.to(device, torch.float64), bool(kind),
                       label_g.to(device, torch.float64))
                      for mean, g, kind, label_g in zip(state["means"], state["potentials"], state["single_label"],
                                                        state["label_potentials"])]


def otdd_value_only(source: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor],
                    epsilon: float = 0.1, inner: str = "exact") -> float:
    """OTDD between two labelled datasets as a float (convenience for tests and reports)."""
    objective = OTDD(*source, epsilon=epsilon, inner=inner, warm_start=False)
    return float(objective(*target))


__all__ = ["OTDD", "otdd_value_only"]
