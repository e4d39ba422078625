"""Entropic OT between weighted point sets given dense cost matrices, solved to convergence.

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

Speed notes (one CPU thread): a kernel rebuild (one exp over the whole matrix) costs ~10x a pair of
mat-vecs, so rebuilds are what the solver economises on. exp() of arguments below the smallest
normal float (~ -87 in float32) takes a slow scalar path in libm/Sleef (10-15x slower on this
machine), and at eps = 0.1 most kernel entries are that small; the exponent is therefore clamped at
log(tiny) first. A clamped entry is ~1e-38 instead of a smaller number or 0, which changes row sums
by < 1e-30 relative: invisible.

`sinkhorn_batched` solves B independent problems of the same (padded) shape at once (`bmm`
mat-vecs, one kernel tensor); zero weights mark padding. `sinkhorn` is its B = 1 case.
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


@dataclass
class BatchedSinkhornResult:
    f: torch.Tensor        # (B, n) float64
    g: torch.Tensor        # (B, m) float64
    values: torch.Tensor   # (B,) float64 OT_eps of each problem
    plan: torch.Tensor     # (B, n, m), dtype of C
    iterations: int


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 via ||x||^2 + ||y||^2 - 2 x.y (one matmul), clamped at 0; batched if 3-D."""
    xx = (x * x).sum(-1).unsqueeze(-1)
    yy = (y * y).sum(-1).unsqueeze(-2)
    if x.dim() == 2:
        return torch.addmm(xx + yy, x, y.T, alpha=-2.0).clamp_min_(0.0)
    return torch.baddbmm(xx + yy, x, y.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


def _floor(dtype: torch.dtype) -> float:
    """Smallest exponent whose exp() is still a normal number (see the module note on speed)."""
    return math.log(torch.finfo(dtype).tiny) + 0.5


def _kernel(c: torch.Tensor, f: torch.Tensor, g: torch.Tensor, eps: float, out: torch.Tensor) -> torch.Tensor:
    """out = exp((f_i + g_j - C_ij) / eps) for (B, n, m) C, (B, n) f, (B, m) g; written in place."""
    torch.sub(f.to(c.dtype)[:, :, None], c, out=out)
    out.add_(g.to(c.dtype)[:, None, :]).mul_(1.0 / eps).clamp_min_(_floor(c.dtype)).exp_()
    return out


def _logsumexp_rows(z: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim, with the exponent clamped like `_kernel` (fast exp path)."""
    top = z.amax(-1, keepdim=True).clamp_min(torch.finfo(z.dtype).min)
    return (z - top).clamp_min_(_floor(z.dtype)).exp_().sum(-1).log_() + top.squeeze(-1)


def sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, *,
             init: tuple[torch.Tensor, torch.Tensor] | None = None, eps_start: float | None = None,
             scaling: float = 0.5, rtol: float = 1e-5, max_iter: int = 5000,
             level_iter: int = 2, symmetric: bool = False) -> SinkhornResult:
    """Solve entropic OT between weights a (n,) and b (m,) under `cost` (n, m), to convergence.

    `init` warm-starts the potentials; `eps_start` is where eps-scaling begins (default: the spread
    of the double-centred cost when cold, `4 * eps` when warm). The returned value does not depend
    on either beyond the stopping tolerance. `symmetric`: see `sinkhorn_batched`.
    """
    batched_init = None if init is None else (init[0][None], init[1][None])
    out = sinkhorn_batched(cost[None], a[None], b[None], eps, init=batched_init, eps_start=eps_start,
                           scaling=scaling, rtol=rtol, max_iter=max_iter, level_iter=level_iter,
                           symmetric=symmetric)
    return SinkhornResult(f=out.f[0], g=out.g[0], value=float(out.values[0]), plan=out.plan[0],
                          iterations=out.iterations)


def sinkhorn_batched(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, *,
                     init: tuple[torch.Tensor, torch.Tensor] | None = None, eps_start: float | None = None,
                     scaling: float = 0.5, rtol: float = 1e-5, max_iter: int = 5000,
                     level_iter: int = 2, symmetric: bool = False) -> BatchedSinkhornResult:
    """B independent problems: cost (B, n, m), weights a (B, n) and b (B, m) (each summing to 1).

    Zero weights mark padding (their cost entries may be anything, +inf included); every problem
    runs until it has converged by the rule of `_converged`.

    `symmetric` (a == b, C = C^T: a dataset with itself): one potential, averaged updates
    u <- sqrt(u * a / (K u)) (GeomLoss' symmetric Sinkhorn), which converges in a few dozen
    iterations where alternating updates oscillate for hundreds; the value is the dual
    2 <a, f> - eps (mass - 1).
    """
    a64, b64 = a.double(), b.double()
    batch, n, m = cost.shape
    live_a, live_b = a64 > 0, b64 > 0
    padded = not (bool(live_a.all()) and bool(live_b.all()))
    if init is None:
        f = torch.zeros(batch, n, dtype=torch.float64, device=cost.device)
        g, spread = _cold_start(cost, a64, b64, live_a, live_b, padded)
        start = eps_start if eps_start is not None else max(spread, eps)
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
    offset = -eps * (torch.xlogy(a64, a64).sum(1) + torch.xlogy(b64, b64).sum(1))
    a_c, b_c = a64.to(cost.dtype), b64.to(cost.dtype)
    log_b = b64.log()
    hi, lo = math.exp(ABSORB_AT), math.exp(-ABSORB_AT)
    tiny = torch.finfo(cost.dtype).tiny
    noise = 16 * torch.finfo(cost.dtype).eps * eps  # symmetric dual: changes below this are rounding in K u
    iterations = 0

    def absorb(f, g, u, v, e):
        return f + e * u.clamp_min(tiny).double().log(), g + e * v.clamp_min(tiny).double().log()

    for level, e in enumerate(levels):
        final = level == len(levels) - 1
        if level == 0:  # exact log-domain half-step for f: the kernel then has no all-zero row
            f = -e * _logsumexp_rows((g / e + log_b).to(cost.dtype)[:, None, :] - cost / e).double()
            f = torch.where(live_a, f, 0.0)
            if symmetric:
                f = g = 0.5 * (f + g)
        kernel = _kernel(cost, f, g, e, buf)
        u = torch.ones(batch, n, dtype=cost.dtype, device=cost.device)
        v = torch.ones(batch, m, dtype=cost.dtype, device=cost.device)
        history: list[torch.Tensor] = []
        steps = max_iter if final else level_iter
        for _ in range(steps):
            iterations += 1
            if symmetric:
                ku = _row_sums(kernel, u)
                if final:  # dual value at the current potential, before the update
                    mass = (u * ku).double().sum(1)
                    fv = f + e * u.clamp_min(tiny).double().log()
                    history.append(2 * (a64 * fv).sum(1) - e * (mass - 1) + offset)
                u = (u * a_c / ku.clamp_min_(1e-30)).sqrt_()
                v = u
                if bool((u.amax() > hi) | (u.amin() < lo) if not padded else
                        (torch.where(live_a, u, 1.0).amax() > hi) | (torch.where(live_a, u, 1.0).amin() < lo)):
                    f, _ = absorb(f, f, u, u, e)
                    g = f
                    kernel = _kernel(cost, f, g, e, buf)
                    u.fill_(1.0)
                if final and _converged(history, rtol, noise):
                    break
                continue
            v = b_c / _column_sums(kernel, u).clamp_min_(1e-30)
            u = a_c / _row_sums(kernel, v).clamp_min_(1e-30)
            if padded:  # padding has zero scaling; only live entries decide on absorption
                cu, cv = torch.where(live_a, u, 1.0), torch.where(live_b, v, 1.0)
            else:
                cu, cv = u, v
            if bool((cu.amax() > hi) | (cv.amax() > hi) | (cu.amin() < lo) | (cv.amin() < lo)):
                f, g = absorb(f, g, u, v, e)
                kernel = _kernel(cost, f, g, e, buf)
                u.fill_(1.0)
                v.fill_(1.0)
            if not final:
                continue
            # After the u-update the row marginals are exact; the dual value is <a, f> + <b, g> - eps*(mass - 1).
            fv, gv = absorb(f, g, u, v, e)
            history.append((a64 * fv).sum(1) + (b64 * gv).sum(1) + offset)
            if _converged(history, rtol):
                break
        f, g = absorb(f, g, u, v, e)
    plan = kernel.mul_(u[:, :, None]).mul_(v[:, None, :])
    if symmetric:
        values = history[-1]
    else:
        values = (a64 * f).sum(1) + (b64 * g).sum(1) + offset
    return BatchedSinkhornResult(f=f, g=g, values=values, plan=plan, iterations=iterations)


def _row_sums(kernel: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(K v) per problem. bmm(K, v) with a (m, 1) right side is a slow path on CPU; these are not."""
    if len(kernel) == 1:
        return torch.mv(kernel[0], v[0])[None]
    return torch.bmm(v[:, None, :], kernel.transpose(1, 2))[:, 0, :]


def _column_sums(kernel: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(K^T u) per problem."""
    if len(kernel) == 1:
        return (u[0] @ kernel[0])[None]
    return torch.bmm(u[:, None, :], kernel)[:, 0, :]


def _cold_start(cost, a64, b64, live_a, live_b, padded) -> tuple[torch.Tensor, float]:
    """Initial g and the eps where scaling starts, for a cold solve.

    C_ij = r_i + c_j + R_ij with r, c the weighted row / column means: r and c are absorbed by
    the potentials (g starts at c, f comes from the first half-step), so scaling only has to
    start at the spread of the double-centred residual R, not at the range of C (for squared
    Euclidean costs, R = -2 <x_i - x_mean, y_j - y_mean>: typically 10-20x smaller than C's range).
    """
    c = torch.where(torch.isfinite(cost), cost, 0.0) if padded else cost
    ac, bc = a64.to(cost.dtype), b64.to(cost.dtype)
    col = torch.bmm(ac[:, None, :], c)[:, 0, :]           # (B, m)
    row = torch.bmm(c, bc[:, :, None])[:, :, 0]           # (B, n)
    total = (row * ac).sum(1)                             # (B,)
    residual = c - row[:, :, None] - col[:, None, :] + total[:, None, None]
    if padded:
        residual.mul_(live_a[:, :, None].to(c.dtype)).mul_(live_b[:, None, :].to(c.dtype))
    spread = float((residual.amax((1, 2)) - residual.amin((1, 2))).max())
    g = torch.where(live_b, col.double(), 0.0)
    return g, spread


def _converged(history: list[torch.Tensor], rtol: float, floor: float = 0.0, window: int = 5) -> bool:
    """Stop when, for every problem, the extrapolated remaining increase of the (monotone) dual is
    below rtol*|value|, or a window's change is below `floor` (the kernel's rounding noise).

    Increments are summed over windows of `window` iterations and the windowed contraction rate
    extrapolates the geometric tail, which is robust to float32 noise in single increments.
    """
    if len(history) < 2 * window + 1:
        return False
    recent = history[-1] - history[-1 - window]
    before = history[-1 - window] - history[-1 - 2 * window]
    scale = rtol * history[-1].abs().clamp_min(1e-12)
    rate = recent / before
    tail = recent * rate / (1 - rate)
    done = (recent.abs() <= torch.clamp_min(1e-3 * scale, floor)) | ((before > 0) & (recent > 0) & (recent < before) & (tail <= scale))
    return bool(done.all())
