"""Entropic OT between two weighted point sets given a dense cost matrix, solved to convergence.

Value convention: OT_eps(a, b) = min_P <P, C> + eps * KL(P | a b^T), i.e. the regularised objective
(equal to the dual <a, f> + <b, g> at the optimum; GeomLoss and microsoft/otdd use the same). Its
gradient w.r.t. C is exactly the optimal plan P (envelope theorem), which is what makes a
detached-plan surrogate the correct gradient. (POT's `sinkhorn2` returns only <P, C>, without the
entropy term; the two differ by eps * KL(P | a b^T).)

Costs here are large (hundreds to thousands) against eps = 0.1, so the solver is the stabilised
scaling algorithm (Schmitzer 2019): potentials (f, g) carry the large part, a kernel
K = exp((f + g - C) / eps) is rebuilt once per absorption, and the inner iterations are two
mat-vecs. eps-scaling (eps0 -> eps, factor `scaling`) gets the potentials close before the final
eps; a warm start (f, g from a similar previous problem) lets the scaling start low.
Convergence at the final eps is linear; the solver stops when the estimated remaining dual gap
(Aitken extrapolation of successive dual increments) is below `rtol * |value|`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ABSORB_AT = 30.0  # absorb scalings into the potentials before exp() leaves float32 range


@dataclass
class SinkhornResult:
    f: torch.Tensor        # (n,) float64 dual potential of a
    g: torch.Tensor        # (m,) float64 dual potential of b
    value: float           # OT_eps(a, b), regularised objective
    plan: torch.Tensor     # (n, m) optimal plan, same dtype as C
    iterations: int


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 via ||x||^2 + ||y||^2 - 2 x.y (one matmul), clamped at 0."""
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1)
    return torch.addmm(xx + yy, x, y.T, alpha=-2.0).clamp_min_(0.0)


def _kernel(c: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float, out: torch.Tensor) -> torch.Tensor:
    """out = exp((f_i + g_j - C_ij) / eps), written in place."""
    torch.sub(f.to(c.dtype)[:, None], c, out=out)
    out.add_(g.to(c.dtype)[None, :]).mul_(1.0 / eps).exp_()
    return out


def sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, *,
             init: tuple[torch.Tensor, torch.Tensor] | None = None, eps_start: float | None = None,
             scaling: float = 0.5, rtol: float = 1e-5, max_iter: int = 5000,
             level_iter: int = 2) -> SinkhornResult:
    """Solve entropic OT between weights a (n,) and b (m,) under `cost` (n, m), to convergence.

    `init` warm-starts the potentials; `eps_start` is where eps-scaling begins (default: the cost
    range when cold, `16 * eps` when warm). The returned value does not depend on either beyond
    the stopping tolerance.
    """
    a64, b64 = a.double(), b.double()
    n, m = cost.shape
    if init is None:
        f = torch.zeros(n, dtype=torch.float64, device=cost.device)
        g = torch.zeros(m, dtype=torch.float64, device=cost.device)
        start = eps_start if eps_start is not None else max(float(cost.max() - cost.min()), eps)
    else:
        f, g = init[0].double().clone(), init[1].double().clone()
        start = eps_start if eps_start is not None else 4 * eps
    levels = []
    e = max(start, eps)
    while e > eps * (1 + 1e-9):
        levels.append(e)
        e *= scaling
    levels.append(eps)
    buf = torch.empty_like(cost)
    # Our potentials carry eps*log(a), eps*log(b) (K has no a b^T factor); this restores KL(P | a b^T).
    offset = -eps * float(torch.xlogy(a64, a64).sum() + torch.xlogy(b64, b64).sum())
    a_c, b_c = a64.to(cost.dtype), b64.to(cost.dtype)
    iterations = 0
    for level, e in enumerate(levels):
        final = level == len(levels) - 1
        if level == 0:  # exact log-domain half-step for f: the kernel then has no all-zero row
            f = -e * torch.logsumexp((g / e + b64.log()).to(cost.dtype)[None, :] - cost / e, dim=1).double()
        kernel = _kernel(cost, f, g, e, buf)
        u = torch.ones(n, dtype=cost.dtype, device=cost.device)
        v = torch.ones(m, dtype=cost.dtype, device=cost.device)
        history: list[float] = []
        steps = max_iter if final else level_iter
        for _ in range(steps):
            iterations += 1
            v = b_c / (kernel.T @ u).clamp_min(1e-30)
            u = a_c / (kernel @ v).clamp_min(1e-30)
            if float(u.max()) > math.exp(ABSORB_AT) or float(v.max()) > math.exp(ABSORB_AT) \
                    or float(u.min()) < math.exp(-ABSORB_AT) or float(v.min()) < math.exp(-ABSORB_AT):
                f, g = f + e * u.double().log(), g + e * v.double().log()
                kernel = _kernel(cost, f, g, e, buf)
                u.fill_(1.0)
                v.fill_(1.0)
            if not final:
                continue
            # After the u-update the row marginals are exact; the dual value is <a, f> + <b, g> - eps*(mass - 1).
            fv, gv = f + e * u.double().log(), g + e * v.double().log()
            history.append(float(a64 @ fv + b64 @ gv) + offset)
            if _converged(history, rtol):
                break
        f, g = f + e * u.double().log(), g + e * v.double().log()
    plan = kernel.mul_(u[:, None]).mul_(v[None, :])
    value = float(a64 @ f + b64 @ g) + offset
    return SinkhornResult(f=f, g=g, value=value, plan=plan, iterations=iterations)


def _converged(history: list[float], rtol: float, window: int = 5) -> bool:
    """Stop when the extrapolated remaining increase of the (monotone) dual is below rtol*|value|.

    Increments are summed over windows of `window` iterations and the windowed contraction rate
    extrapolates the geometric tail, which is robust to float32 noise in single increments.
    """
    if len(history) < 2 * window + 1:
        return False
    recent = history[-1] - history[-1 - window]
    before = history[-1 - window] - history[-1 - 2 * window]
    scale = rtol * max(abs(history[-1]), 1e-12)
    if abs(recent) <= 1e-3 * scale:
        return True
    if before <= 0 or recent <= 0 or recent >= before:
        return False
    rate = recent / before
    return recent * rate / (1 - rate) <= scale
