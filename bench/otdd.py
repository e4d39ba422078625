"""One ORCA alignment call (OTDD exact / gaussian, forward + backward) vs a straightforward POT version.

Input: 5000 source points of width 384 in 10 classes, 256 target points of one class (float32,
seed 0; class means ~ N(0, I), points ~ N(mean, 0.25 I); the target class has its own mean), eps
0.1, debiased, one CPU thread. Each variant runs in its own subprocess so that its peak RSS
(ru_maxrss) is its own. Writes bench/results/otdd.md.

    .venv/bin/python bench/otdd.py [--steady 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
EPS = 0.1


def make_data():
    g = torch.Generator().manual_seed(0)
    d, n, k, m = 384, 5000, 10, 256
    means = torch.randn(k, d, generator=g)
    ys = torch.arange(n) % k
    xs = means[ys] + 0.5 * torch.randn(n, d, generator=g)
    xt = torch.randn(d, generator=g) + 0.5 * torch.randn(m, d, generator=g)
    return xs, ys, xt, torch.zeros(m, dtype=torch.long)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(inner: str, steady: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from core.alignment import build_objective

    xs, ys, xt, yt = make_data()
    t = time.perf_counter()
    objective = build_objective(f"otdd_{inner}", xs, ys, epsilon=EPS)
    build = time.perf_counter() - t
    embedder = torch.nn.Linear(384, 384)  # stands in for f: one small lr step between calls
    with torch.no_grad():
        embedder.weight.copy_(torch.eye(384))
        embedder.bias.zero_()
    optimizer = torch.optim.SGD(embedder.parameters(), lr=1e-6)
    times, values = [], []
    for _ in range(1 + steady):
        optimizer.zero_grad()
        t = time.perf_counter()
        loss = objective(embedder(xt), yt)
        loss.backward()
        times.append(time.perf_counter() - t)
        values.append(float(loss.detach()))
        optimizer.step()
    return {"build_s": build, "first_s": times[0], "steady_s": float(np.median(times[1:])) if steady else None,
            "value": values[0], "grad_norm": float(embedder.weight.grad.norm()), "peak_mb": peak_mb()}


def run_pot(inner: str) -> dict:
    import ot
    from scipy.linalg import sqrtm

    xs, ys, xt, yt = make_data()
    t = time.perf_counter()
    x = xt.double().numpy()
    s = xs.double().numpy()
    yl, tl = ys.numpy(), yt.numpy()

    def label_w(a, la, b, lb):
        out = {}
        for i in np.unique(la):
            for j in np.unique(lb):
                p, q = a[la == i], b[lb == j]
                if inner == "exact":
                    out[i, j] = ot.emd2(ot.unif(len(p)), ot.unif(len(q)), ot.dist(p, q))
                else:
                    cp, cq = np.cov(p.T, bias=True), np.cov(q.T, bias=True)
                    rq = sqrtm(cq).real
                    cross = sqrtm(rq @ cp @ rq).real
                    out[i, j] = ((p.mean(0) - q.mean(0)) ** 2).sum() + np.trace(cp) + np.trace(cq) - 2 * np.trace(cross)
        return out

    def ot_eps(a, la, b, lb):
        w = label_w(a, la, b, lb)
        table = np.array([[w[i, j] for j in np.unique(lb)] for i in np.unique(la)])
        cost = ot.dist(a, b) + table[np.searchsorted(np.unique(la), la)][:, np.searchsorted(np.unique(lb), lb)]
        pa, pb = ot.unif(len(a)), ot.unif(len(b))
        plan = ot.sinkhorn(pa, pb, cost, EPS, method="sinkhorn_log", numItermax=3000, stopThr=1e-9)
        mask = plan > 0
        return float((plan * cost).sum() + EPS * (plan[mask] * np.log(plan[mask] / np.outer(pa, pb)[mask])).sum()), plan

    cross, plan = ot_eps(x, tl, s, yl)
    own, own_plan = ot_eps(x, tl, x, tl)
    src, _ = ot_eps(s, yl, s, yl)
    value = cross - 0.5 * own - 0.5 * src
    grad = 2 * (plan.sum(1)[:, None] * x - plan @ s) - 2 * (own_plan.sum(1)[:, None] * x - own_plan @ x)
    return {"call_s": time.perf_counter() - t, "value": value, "grad_norm_x": float(np.linalg.norm(grad)),
            "peak_mb": peak_mb()}


def subprocess_json(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["ours-exact", "ours-gaussian", "pot-exact", "pot-gaussian"])
    parser.add_argument("--steady", type=int, default=5)
    parser.add_argument("--skip-pot", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if args.part:
        kind, inner = args.part.split("-")
        print(json.dumps(run_ours(inner, args.steady) if kind == "ours" else run_pot(inner)))
        return
    rows = []
    for inner in ("exact", "gaussian"):
        ours = subprocess_json("--part", f"ours-{inner}", "--steady", str(args.steady))
        pot = None if args.skip_pot else subprocess_json("--part", f"pot-{inner}")
        rows.append((inner, ours, pot))
        print(inner, json.dumps(ours), json.dumps(pot), flush=True)
    write_report(rows, args)


def write_report(rows, args) -> None:
    import os
    lines = [f"# OTDD alignment call: ours vs straightforward POT ({datetime.date.today().isoformat()})", "",
             f"Command: `.venv/bin/python bench/otdd.py --steady {args.steady}`  ",
             "5000 source x 384 (10 classes) vs 256 target (1 class), eps 0.1, debiased, forward + backward, "
             f"torch.set_num_threads(1); load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "(shared machine: absolute times are noisy).", "",
             "| inner W | ours build (s) | ours first call (s) | ours steady call (s) | POT call (s) | speed-up (steady) "
             "| ours value | POT value | rel. diff | ours peak RSS (MB) | POT peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for inner, ours, pot in rows:
        steady = ours["steady_s"] or ours["first_s"]
        if pot:
            rel = abs(ours["value"] - pot["value"]) / abs(pot["value"])
            extra = (f"{pot['call_s']:.1f} | {pot['call_s'] / steady:.0f}x | {ours['value']:.4f} | {pot['value']:.4f} "
                     f"| {rel:.1e} | {ours['peak_mb']:.0f} | {pot['peak_mb']:.0f} |")
        else:
            extra = f"- | - | {ours['value']:.4f} | - | - | {ours['peak_mb']:.0f} | - |"
        lines.append(f"| {inner} | {ours['build_s']:.2f} | {ours['first_s']:.3f} | {steady:.3f} | " + extra)
    lines += ["", "Reference (task brief, microsoft/otdd on this machine): 17.4 s exact, 12.7 s gaussian, 1.2 GB peak RSS; "
              "plain POT log-domain Sinkhorn 26-32 s.", "",
              "POT version: label distances recomputed in full each call (ot.emd2 per class pair, or scipy sqrtm Bures), "
              "ot.sinkhorn(method='sinkhorn_log', numItermax=3000, stopThr=1e-9) on the three full problems, value = "
              "<P, C> + eps KL(P | a b^T) (the regularised objective ours returns). Steady state: after each call one SGD "
              "step (lr 1e-6) on an identity-initialised Linear embedder, so the target moves slightly and the "
              "warm start is used."]
    out = ROOT / "bench" / "results" / "otdd.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
