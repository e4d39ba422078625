"""One ORCA alignment call (OTDD exact / gaussian, forward + backward) vs a straightforward POT version.

Input: 5000 source points of width 384 in 10 classes, 256 target points of one class (float32,
seed 0; class means ~ N(0, I), points ~ N(mean, 0.25 I); the target class has its own mean), eps
0.1, debiased, one CPU thread. Each variant runs in its own subprocess so that its peak RSS
(ru_maxrss) is its own. Writes bench/results/otdd.md (with bench/results/otdd_notes.md, the
hand-written analysis, appended).

The microsoft/otdd reference (17.4 s exact, 12.7 s gaussian) is not run here: it was measured
separately, on this machine class, and the report compares this run's warm (steady) and cold
(first) calls against those fixed figures.

    .venv/bin/python bench/otdd.py [--steady 5] [--skip-pot]
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
# microsoft/otdd's call on the same problem: measured separately on this machine class, not by this script
REFERENCE_S = {"exact": 17.4, "gaussian": 12.7}
REFERENCE_NOTE = ("microsoft/otdd's call on the same problem, measured separately on this machine class (2-core "
                  "CPU, one thread; the figures the task brief gives), not in this run: 17.4 s exact, 12.7 s "
                  "gaussian, 1.2 GB peak RSS. The ratios below divide those fixed figures by this run's times.")


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


def run_ours(inner: str, steady: int, label_solver: str = "sinkhorn", rtol: float = 1e-5) -> dict:
    sys.path.insert(0, str(ROOT))
    from core.alignment import build_objective

    xs, ys, xt, yt = make_data()
    t = time.perf_counter()
    objective = build_objective(f"otdd_{inner}", xs, ys, epsilon=EPS, label_solver=label_solver, rtol=rtol,
                                warm_start=steady > 0)
    build = time.perf_counter() - t
    embedder = torch.nn.Linear(384, 384)  # stands in for f: one small lr step between calls
    with torch.no_grad():
        embedder.weight.copy_(torch.eye(384))
        embedder.bias.zero_()
    optimizer = torch.optim.SGD(embedder.parameters(), lr=1e-6)
    times, cpu, values = [], [], []
    for _ in range(1 + steady):
        optimizer.zero_grad()
        t, c = time.perf_counter(), time.process_time()
        loss = objective(embedder(xt), yt)
        loss.backward()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        values.append(float(loss.detach()))
        optimizer.step()
    return {"build_s": build, "first_s": times[0], "steady_s": float(np.median(times[1:])) if steady else None,
            "steady_cpu_s": float(np.median(cpu[1:])) if steady else None,
            "value": values[0], "grad_norm": float(embedder.weight.grad.norm()) if steady == 0 else None,
            "peak_mb": peak_mb()}


def run_pot(inner: str) -> dict:
    """Straightforward POT, nothing cached: every label distance (ot.emd2 per class pair / POT's
    Bures-Wasserstein) and the three full augmented problems by ot.sinkhorn2(method="sinkhorn_log")
    at POT's defaults (numItermax 1000, stopThr 1e-9), torch backend, float64, one thread. The
    gradient w.r.t. the target comes from the two plans (envelope), not from autograd through 1000
    iterations."""
    import ot

    xs, ys, xt, yt = make_data()
    wall = time.perf_counter()
    x, s = xt.double(), xs.double()

    def label_w(a, la, b, lb):
        out = {}
        for i in torch.unique(la).tolist():
            for j in torch.unique(lb).tolist():
                p, q = a[la == i], b[lb == j]
                if inner == "exact":
                    out[i, j] = float(ot.emd2(ot.unif(len(p)), ot.unif(len(q)), ot.dist(p, q).numpy()))
                else:  # ||mu - mu'||^2 + tr cp + tr cq - 2 tr (cq^1/2 cp cq^1/2)^1/2, two eighs per pair
                    cp, cq = torch.cov(p.T, correction=0), torch.cov(q.T, correction=0)
                    lq, vq = torch.linalg.eigh(cq)
                    rq = (vq * lq.clamp_min(0).sqrt()) @ vq.T
                    cross = torch.linalg.eigvalsh(rq @ cp @ rq).clamp_min(0).sqrt().sum()
                    out[i, j] = float(((p.mean(0) - q.mean(0)) ** 2).sum() + cp.trace() + cq.trace() - 2 * cross)
        return out

    def augmented(a, la, b, lb):
        w = label_w(a, la, b, lb)
        table = torch.tensor([[w[i, j] for j in torch.unique(lb).tolist()] for i in torch.unique(la).tolist()],
                             dtype=torch.float64)
        return ot.dist(a, b) + table[torch.unique(la, return_inverse=True)[1]][:, torch.unique(lb, return_inverse=True)[1]]

    def solve(cost):
        pa = torch.full((cost.shape[0],), 1.0 / cost.shape[0], dtype=torch.float64)
        pb = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=torch.float64)
        transport, log = ot.sinkhorn2(pa, pb, cost, EPS, method="sinkhorn_log", log=True, warn=False)
        plan = torch.exp(log["log_u"][:, None] + log["log_v"][None, :] - cost / EPS)
        rows, cols = plan.sum(1), plan.sum(0)
        # regularised objective <P, C> + eps KL(P | a b^T) (what ours returns), from POT's potentials
        value = EPS * float(rows @ (log["log_u"] - pa.log()) + cols @ (log["log_v"] - pb.log()))
        err = float((cols - pb).norm())
        return {"value": value, "transport": float(transport), "niter": int(log["niter"]) + 1, "err": err,
                "converged": err < 1e-9}, plan

    t = time.perf_counter()
    cross, plan = solve(augmented(x, yt, s, ys))
    own, own_plan = solve(augmented(x, yt, x, yt))
    grad = 2 * (plan.sum(1)[:, None] * x - plan @ s) - 2 * (own_plan.sum(1)[:, None] * x - own_plan @ x)
    target_part = time.perf_counter() - t
    t = time.perf_counter()
    source_cost = augmented(s, ys, s, ys)
    source_labels = time.perf_counter() - t
    t = time.perf_counter()
    src, _ = solve(source_cost)
    source_solve = time.perf_counter() - t
    return {"call_s": time.perf_counter() - wall, "source_solve_s": source_solve,
            "source_labels_s": source_labels, "target_part_s": target_part,
            "value": cross["value"] - 0.5 * own["value"] - 0.5 * src["value"], "cross": cross, "own": own, "source": src,
            "grad_norm_x": float(grad.norm()), "peak_mb": peak_mb()}


def subprocess_json(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part")
    parser.add_argument("--steady", type=int, default=5)
    parser.add_argument("--skip-pot", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if args.part:
        kind, inner = args.part.split("-")
        if kind == "ours":
            inner, _, solver = inner.partition("_")
            out = run_ours(inner, args.steady, solver or "sinkhorn")
        elif kind == "tight":
            out = run_ours(inner, 0, rtol=1e-8)
        else:
            out = run_pot(inner)
        print(json.dumps(out))
        return
    rows = {}
    started = time.perf_counter()
    # ours side by side (alternating), then the tight references, then POT
    for part in ("ours-exact", "ours-gaussian", "ours-exact_emd", "ours-exact", "ours-gaussian", "ours-exact_emd"):
        rows.setdefault(part, []).append(subprocess_json("--part", part, "--steady", str(args.steady)))
        print(part, json.dumps(rows[part][-1]), flush=True)
    for part in ("tight-exact", "tight-gaussian") + (() if args.skip_pot else ("pot-exact", "pot-gaussian")):
        rows[part] = [subprocess_json("--part", part)]
        print(part, json.dumps(rows[part][-1]), flush=True)
    write_report(rows, args, time.perf_counter() - started)


def write_report(rows, args, elapsed) -> None:
    import os
    load = os.getloadavg()

    def best(part, key):  # the faster of the two alternated runs (noise on a shared machine only adds time)
        return min(r[key] for r in rows[part])

    lines = [f"# OTDD alignment call: ours vs straightforward POT ({datetime.date.today().isoformat()})", "",
             f"Command: `.venv/bin/python bench/otdd.py --steady {args.steady}`"
             f"{' --skip-pot' if args.skip_pot else ''}  ",
             "5000 source x 384 (10 classes) vs 256 target (1 class), eps 0.1, debiased, forward + backward, "
             f"torch.set_num_threads(1). Load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / "
             f"{load[2]:.1f} on {os.cpu_count()} cores; whole run {elapsed / 60:.1f} min. Each row is its own "
             "subprocess (own peak RSS); ours ran twice, alternating, and the faster run is shown.", "",
             "| variant | build (s) | first call (s) | steady call (s) | steady CPU (s) | value | rel. diff vs tight "
             "| peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    tight = {inner: rows[f"tight-{inner}"][0]["value"] for inner in ("exact", "gaussian")}
    for part, label in (("ours-exact", "ours exact (label W: batched debiased Sinkhorn, default)"),
                        ("ours-exact_emd", "ours exact, label_solver=emd"), ("ours-gaussian", "ours gaussian")):
        inner = "gaussian" if "gaussian" in part else "exact"
        r = rows[part][0]
        rel = abs(r["value"] - tight[inner]) / abs(tight[inner])
        lines.append(f"| {label} | {best(part, 'build_s'):.2f} | {best(part, 'first_s'):.3f} | "
                     f"{best(part, 'steady_s'):.3f} | {best(part, 'steady_cpu_s'):.3f} | {r['value']:.4f} | {rel:.1e} "
                     f"| {max(x['peak_mb'] for x in rows[part]):.0f} |")
    for inner in ("exact", "gaussian"):
        r = rows[f"tight-{inner}"][0]
        lines.append(f"| tight reference {inner} (ours, rtol 1e-8, no warm start) | {r['build_s']:.2f} | "
                     f"{r['first_s']:.3f} | - | - | {r['value']:.4f} | 0 | {r['peak_mb']:.0f} |")
    emd_rel = abs(rows["ours-exact"][0]["value"] - rows["ours-exact_emd"][0]["value"]) / abs(rows["ours-exact_emd"][0]["value"])
    lines += ["", f"Label solver: entropic (default) vs emd OTDD value: relative difference {emd_rel:.1e}.", ""]
    if "pot-exact" in rows:
        lines += ["| inner W | POT call (s) | ours steady (s) | ratio | ratio vs ours first (cold) call | POT value "
                  "| rel. diff vs tight | rel. diff ours vs POT | POT converged at its default cap? | POT peak RSS (MB) "
                  "| ours peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for inner in ("exact", "gaussian"):
            p = rows[f"pot-{inner}"][0]
            ours, first = best(f"ours-{inner}", "steady_s"), best(f"ours-{inner}", "first_s")
            ours_value = rows[f"ours-{inner}"][0]["value"]
            conv = "; ".join(f"{name}: {'yes' if p[key]['converged'] else 'NO'}, {p[key]['niter']} it, "
                             f"marginal err {p[key]['err']:.1e}"
                             for key, name in (("cross", "target-source"), ("own", "target-target"),
                                               ("source", "source-source")))
            lines.append(f"| {inner} | {p['call_s']:.1f} | {ours:.3f} | {p['call_s'] / ours:.0f}x "
                         f"| {p['call_s'] / first:.0f}x | {p['value']:.4f} | "
                         f"{abs(p['value'] - tight[inner]) / abs(tight[inner]):.1e} | "
                         f"{abs(ours_value - p['value']) / abs(p['value']):.1e} | {conv} | {p['peak_mb']:.0f} "
                         f"| {max(x['peak_mb'] for x in rows[f'ours-{inner}']):.0f} |")
        lines += ["", "POT time split (s): " + "; ".join(
            f"{inner}: target-side labels + target-source and target-target solves + gradient "
            f"{rows[f'pot-{inner}'][0]['target_part_s']:.1f}, source-source labels "
            f"{rows[f'pot-{inner}'][0]['source_labels_s']:.1f}, source-source solve "
            f"{rows[f'pot-{inner}'][0]['source_solve_s']:.1f}" for inner in ("exact", "gaussian"))]
    lines += ["", f"Reference: {REFERENCE_NOTE}", "",
              "| inner W | reference (s, separate measurement) | ours warm call (s) | reference / warm "
              "| ours cold (first) call (s) | reference / cold |", "|---|---|---|---|---|---|"]
    for inner in ("exact", "gaussian"):
        warm, cold = best(f"ours-{inner}", "steady_s"), best(f"ours-{inner}", "first_s")
        lines.append(f"| {inner} | {REFERENCE_S[inner]:g} | {warm:.3f} | {REFERENCE_S[inner] / warm:.0f}x | {cold:.3f} "
                     f"| {REFERENCE_S[inner] / cold:.0f}x |")
    lines += ["",
              "POT version: nothing cached; label distances recomputed in full each call (ot.emd2 per class pair incl. "
              "the source-source ones, or the Bures formula with two eighs per pair: POT's "
              "ot.gaussian.bures_wasserstein_distance returns NaN on the rank-deficient 256-point target covariance); "
              "ot.sinkhorn2(method='sinkhorn_log') at "
              "POT's defaults (numItermax 1000, stopThr 1e-9) on the three full augmented problems (target-source, "
              "target-target, 5000 x 5000 source-source), torch backend float64; value = <P, C> + eps KL(P | a b^T) from "
              "POT's potentials (the regularised objective ours returns); gradient from the plans. 'tight' = our solver "
              "at rtol 1e-8 without warm start (the reference value where POT stops at its cap). Ours: steady state = "
              "after each call one SGD step (lr 1e-6) on an identity-initialised Linear embedder, so the target moves "
              "slightly and the warm start is used; the first call is cold."]
    notes = ROOT / "bench" / "results" / "otdd_notes.md"
    if notes.exists():  # the hand-written analysis, kept across runs
        lines += ["", notes.read_text().rstrip()]
    out = ROOT / "bench" / "results" / "otdd.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
