"""Quality benchmark: every cross-modal method vs plain fine-tuning, the same body from scratch and a classical baseline.

    .venv/bin/python bench/quality.py [--rows darcy16,burgers,dna-oct4-mafk,digits,gunpoint]
                                      [--methods classical,finetune,scratch,orca,pare,mona,contrastive_pare]
                                      [--seeds N] [--scale S | --budget-minutes M] [--budget-seconds T]
                                      [--out FILE] [--smoke]

Every cell is a test metric (lower is better: 0-1 error, or relative L2 for darcy16 / burgers), the
wall time of the whole job (model load, data preparation, stage 1, refinement, final evaluation),
the optimizer steps and the seeds (`training.seed`). With more than one seed a cell shows
mean ± sample std over seeds.

Step budget (one rule for every model method): each row has a refine budget B = max_steps x scale,
the same for finetune, scratch, orca, pare, mona and contrastive_pare. Stage-1 steps (ORCA
alignment: one step per alignment epoch; MoNA: one step per meta iteration; contrastive_pare: one
step per target batch per contrastive epoch) are embedder(+head)-only steps that come ON TOP of B,
as in the seed papers, where stage 1 precedes the same fine-tuning. The steps column shows
`B + stage-1` so the total is visible. ORCA's alignment epochs and MoNA's iterations are scaled
with `--scale` like B; a contrastive epoch cannot be shortened (its step count follows the train
set size and the batch size).

Time budget (`--budget-seconds T`, at most 600): every model job gets the same wall-clock budget,
`training.time_budget_seconds = T`, set-up and stage 1 included (core lets the stages before refine
use at most half of it); refine has no step cap then (the deadline ends it, the lr annealed to 0 at
the deadline), so every column gets the same time rather than the same steps. Stage-1 sizes stay as
`--scale` sets them. Seeds: orca and scratch run 3 seeds on every row (at least; `--seeds` sets all).

Finished cells are kept in a JSON file (gitignored, under bench/data/), keyed by row/method/seed,
so runs of some rows or methods (in parallel processes, say) merge into one table. The table,
the settings and a summary computed from the table (winner per row, does the best cross-modal
method beat the classical baseline and the scratch body, are PaRe and MoNA ahead of ORCA) are
written to --out (default bench/results/quality_methods.md), and every run's raw result (value,
wall time, steps, seed, scale, config; a failure's message without its traceback) beside it as
`<out>_runs.json`, committed with the table, so that the table can be re-derived:

    .venv/bin/python bench/quality.py --methods "" --cells /tmp/cells.json \
        --merge bench/results/quality_methods_runs.json --out /tmp/quality_methods.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import DATA, RESULTS, StageTimer, dataset_path, environment, mean_std

COLUMNS = ("classical", "finetune", "scratch", "orca", "pare", "mona", "contrastive_pare")
MODEL_METHODS = COLUMNS[1:]
CROSS_MODAL = ("finetune", "orca", "pare", "mona", "contrastive_pare")  # pretrained body; scratch is the ablation
BODY = "minilm-l6"
CELLS = DATA / "quality_methods_cells.json"
SMOKE_CELLS = DATA / "quality_methods_smoke_cells.json"
OUT = RESULTS / "quality_methods.md"
SMOKE_OUT = RESULTS / "quality_methods_smoke.md"
PROTECTED = RESULTS / "quality.md"  # the earlier ORCA-only run, kept as it is

# Per-row settings, chosen so one method-row-seed takes ~2-4 minutes on 2 busy CPU cores with
# minilm-l6 (about 15-20 samples/s at 16-20 tokens with one thread). Tokens are kept small on purpose.
ROWS: dict[str, dict] = {
    "darcy16": {"metric": "relative_l2", "seq": 16, "batch": 16, "max_steps": 240, "lr": 3e-4,
                "validation_fraction": 0.1, "seeds": 3, "note": "16x16 -> 4x4 patches, 16 tokens"},
    "burgers": {"metric": "relative_l2", "seq": 16, "batch": 16, "max_steps": 240, "lr": 3e-4,
                "validation_fraction": 0.1, "seeds": 1,
                "note": "(1,16) -> stride 1, 16 tokens; 1000 train / 200 test trajectories, u(t=0) -> u(t=1)"},
    "dna-oct4-mafk": {"metric": "error", "seq": 20, "batch": 32, "max_steps": 120, "lr": 1e-4,
                      "validation_fraction": 0.05, "seeds": 3, "note": "(4,200) -> stride 10, 20 tokens"},
    "digits": {"metric": "error", "seq": 16, "batch": 16, "max_steps": 240, "lr": 2e-4,
               "validation_fraction": 0.1, "seeds": 1, "note": "8x8 -> 2x2 patches, 16 tokens"},
    "gunpoint": {"metric": "error", "seq": 15, "batch": 25, "max_steps": 150, "lr": 2e-4,
                 "validation_fraction": 0.0, "seeds": 1,
                 "note": "(1,150) -> stride 10, 15 tokens; 50 train samples, no val"},
}
# One source proxy for every method that uses one (orca, pare, mona, contrastive_pare).
PROXY = {"proxy": "wordnet", "proxy_samples": 1000}
ALIGN = {"epochs": 15, "maxsamples": 64}  # ORCA; objective default otdd_exact, lr 10x, step decay
MONA = {"iterations": 10, "variant": "second_order"}  # other mona fields: defaults
CONTRASTIVE = {"epochs": 1}  # other contrastive fields: defaults; pare section: defaults
MULTI_SEED = ("orca", "scratch")  # the default method and its ablation: 3 seeds on every row
MIN_SEEDS = 3
MAX_BUDGET_SECONDS = 600.0
TIME_RULE = ("Budget: the same wall-clock time T per job for every model method (training.time_budget_seconds; "
             "set-up and stage 1 count inside it, stage 1 at most T/2); no refine step cap, the lr anneals to 0 "
             "at the deadline. Steps are shown as `refine + stage-1`.")
BUDGET_RULE = ("Budget: the same refine budget B = max_steps x scale for every model method of a row; stage-1 "
               "steps (ORCA alignment epochs, MoNA meta iterations, contrastive_pare contrastive batches; "
               "embedder/head only) come on top of B, as in the seed papers. Steps are shown as `B + stage-1`.")


# ---- classical baselines ----------------------------------------------------------------------

def kmer_counts(x: np.ndarray, k: int = 4) -> np.ndarray:
    """(N, 4, L) one-hot DNA -> (N, 4^k) k-mer counts (windows touching an N base are dropped)."""
    codes = x.argmax(axis=1)
    valid = x.sum(axis=1) > 0
    n, length = codes.shape
    index = np.zeros((n, length - k + 1), dtype=np.int64)
    ok = np.ones((n, length - k + 1), dtype=bool)
    for j in range(k):
        index = index * 4 + codes[:, j:length - k + 1 + j]
        ok &= valid[:, j:length - k + 1 + j]
    counts = np.zeros((n, 4 ** k), dtype=np.float32)
    rows = np.repeat(np.arange(n), length - k + 1)
    np.add.at(counts, (rows[ok.ravel()], index.ravel()[ok.ravel()]), 1.0)
    return counts


def classical(name: str, arrays: dict) -> tuple[str, float]:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, xt, yt = arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]
    flat = lambda a: a.reshape(len(a), -1)
    if name in ("darcy16", "burgers"):  # ridge regression on the flattened input, relative L2 per sample
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(flat(x), flat(y))
        pred, true = model.predict(flat(xt)), flat(yt)
        rel = np.linalg.norm(pred - true, axis=1) / np.linalg.norm(true, axis=1)
        return f"ridge (alpha {model.alpha_:g})", float(rel.mean())
    if name == "dna-oct4-mafk":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(kmer_counts(x), y)
        return "4-mer counts + logistic regression", float(np.mean(model.predict(kmer_counts(xt)) != yt))
    if name == "digits":
        model = LogisticRegression(max_iter=5000).fit(flat(x), y)
        return "logistic regression on pixels", float(np.mean(model.predict(flat(xt)) != yt))
    if name == "gunpoint":
        distances = ((flat(xt)[:, None, :] - flat(x)[None, :, :]) ** 2).sum(-1)
        return "1-NN Euclidean", float(np.mean(y[distances.argmin(1)] != yt))
    raise ValueError(name)


def classical_for_row(name: str) -> tuple[str, float]:
    """The row's classical baseline on its dataset file: (what it is, test metric)."""
    with np.load(dataset_path(name)) as data:
        return classical(name, dict(data))


# ---- cross-modal runs -------------------------------------------------------------------------

def stage1_settings(scale: float) -> dict:
    """ORCA alignment epochs and MoNA iterations scale with the budget (at least 1); a contrastive epoch cannot."""
    return {"orca": max(1, round(ALIGN["epochs"] * scale)), "mona": max(1, round(MONA["iterations"] * scale)),
            "contrastive_pare": CONTRASTIVE["epochs"]}


def seeds_for(name: str, method: str, seeds: int | None) -> list[int]:
    """`--seeds` for every cell when given; else the row's default, at least 3 for orca and scratch."""
    if seeds:
        return list(range(seeds))
    return list(range(max(ROWS[name]["seeds"], MIN_SEEDS if method in MULTI_SEED else 1)))


def job_config(name: str, method: str, scale: float, seed: int, lr: float | None = None,
               budget_seconds: float | None = None) -> dict:
    """One job: a step budget B (max_steps x scale), or with `budget_seconds` a wall-clock budget and no step cap."""
    row = dict(ROWS[name], **({"lr": lr} if lr else {}))
    stage1 = stage1_settings(scale)
    budget = ({"time_budget_seconds": budget_seconds} if budget_seconds else
              {"max_steps": max(1, round(row["max_steps"] * scale))})
    config: dict = {
        "method": "finetune" if method == "scratch" else method,
        "body": {"name": BODY, "pretrained": method != "scratch"},
        "embedder": {"target_seq_len": row["seq"]},
        "training": {"epochs": 10_000, **budget, "batch_size": row["batch"], "lr": row["lr"],
                     "warmup_fraction": 0.1, "schedule": "linear", "seed": seed},
        "evaluation": {"validation_fraction": row["validation_fraction"]},
        # one checkpoint at the very end instead of one per epoch (gunpoint has 2 steps per epoch)
        "checkpoint": {"every_epochs": 10_000},
    }
    if method in ("orca", "pare", "mona", "contrastive_pare"):
        config["alignment"] = dict(PROXY)
    if method == "orca":
        config["alignment"].update(ALIGN, epochs=stage1["orca"])
    if method == "mona":
        config["mona"] = dict(MONA, iterations=stage1["mona"])
    if method == "contrastive_pare":
        config["contrastive"] = dict(CONTRASTIVE)
    return config


def cross_modal(name: str, method: str, scale: float, seed: int, lr: float | None = None,
                budget_seconds: float | None = None) -> dict:
    return run_job(name, job_config(name, method, scale, seed, lr, budget_seconds))


def run_job(name: str, config: dict, callbacks: tuple = ()) -> dict:
    """Run one job config on a row's dataset (CPU): its test metric, its own classical baseline, wall
    time and steps per stage."""
    from core.config import parse_config
    from core.runner import run

    timer = StageTimer()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xmodal-quality-") as out:
        result = run(parse_config(config), dataset_path(name), Path(out), callbacks=[timer, *callbacks],
                     device=torch.device("cpu"))
    if result.error is not None:
        raise result.error
    wall = time.perf_counter() - start
    stages = timer.steps_by_stage()
    refine_steps = stages.get("refine", 0)
    stage1 = {stage: steps for stage, steps in stages.items() if stage != "refine"}
    return {"value": result.summary["test"][ROWS[name]["metric"]], "wall_s": wall,
            "steps": result.summary["steps"], "refine_steps": refine_steps, "stage1_steps": sum(stage1.values()),
            "stage1": stage1, "baseline": result.summary.get("baseline"), "budget_s": config.get("training", {}).get("time_budget_seconds"), "config": config}


# ---- cells ------------------------------------------------------------------------------------

def load_cells(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_cells(path: Path, cells: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cells, indent=1))
    tmp.replace(path)


def key(name: str, method: str, seed: int | None) -> str:
    return f"{name}/{method}/{'-' if seed is None else seed}"


def group(cells: dict, name: str, method: str) -> list[dict]:
    prefix = f"{name}/{method}/"
    return [cell for k, cell in sorted(cells.items()) if k.startswith(prefix)]


def aggregate(cells: dict, name: str, method: str) -> dict | None:
    """Mean/std of the successful seeds of a cell; None when nothing ran."""
    runs = group(cells, name, method)
    if not runs:
        return None
    ok = [c for c in runs if "error" not in c]
    failed = [c for c in runs if "error" in c]
    if not ok:
        return {"failed": failed}
    mean, std = mean_std([c["value"] for c in ok])
    return {"mean": mean, "std": std, "n": len(ok), "runs": ok, "failed": failed,
            "seeds": [c.get("seed") for c in ok]}


# ---- table ------------------------------------------------------------------------------------

def fmt_value(value: float, name: str) -> str:
    return f"{value:.4f}" if ROWS[name]["metric"] == "relative_l2" else f"{value:.3f}"


def fmt_cell(agg: dict | None, name: str) -> str:
    if agg is None:
        return "—"
    if "mean" not in agg:
        return f"failed ({type_of(agg['failed'][0])})"
    runs = agg["runs"]
    value = fmt_value(agg["mean"], name)
    if agg["n"] > 1:
        value += f" ± {fmt_value(agg['std'], name)}"
    if "label" in runs[0]:
        text = f"**{value}**<br>{runs[0]['label']}; {runs[0]['wall_s']:.1f} s; seed n/a (deterministic)"
    else:
        wall = sum(c["wall_s"] for c in runs) / len(runs)
        steps = sorted({(c["refine_steps"], c["stage1_steps"]) for c in runs})
        steps_text = ", ".join(f"{r} + {s}" if s else f"{r}" for r, s in steps)
        seeds = ",".join(str(s) for s in agg["seeds"])
        text = (f"**{value}**<br>{wall / 60:.1f} min{'/run' if len(runs) > 1 else ''}; {steps_text} steps; "
                f"seed{'s' if len(runs) > 1 else ''} {seeds}")
    if agg["failed"]:
        text += f"<br>{len(agg['failed'])} seed(s) failed"
    return text


def type_of(cell: dict) -> str:
    return cell["error"].split(":", 1)[0]


def compare(a: dict | None, b: dict | None) -> str:
    """'<' / '=' / '>' on the means, with a note when seed noise covers the gap."""
    if not a or not b or "mean" not in a or "mean" not in b:
        return "n/a"
    gap = b["mean"] - a["mean"]
    sign = "<" if gap > 0 else ("=" if gap == 0 else ">")
    if a["n"] > 1 or b["n"] > 1:  # a deterministic baseline has std 0
        noise = (a["std"] ** 2 + b["std"] ** 2) ** 0.5
        return sign + (" (within seed noise)" if abs(gap) <= noise else " (beyond seed noise)")
    return sign + " (single seed)"


def verdict(comparison: str, yes: str, no: str) -> str:
    if comparison == "n/a":
        return "n/a (missing or failed cell)"
    word = {"<": yes, "=": "tie", ">": no}[comparison[0]]
    return word + comparison[1:]


def summary_lines(cells: dict, rows: list[str]) -> list[str]:
    lines = ["## Summary (computed from the table above)", "",
             "Lower is better. `best cross-modal` = the lowest mean among " + ", ".join(CROSS_MODAL) +
             " (pretrained body). With several seeds a gap counts as beyond seed noise when it exceeds "
             "sqrt(std_a² + std_b²); a single seed says nothing about noise.", ""]
    counts = {"beats classical": 0, "beats scratch": 0, "orca beats scratch beyond seed noise": 0,
              "pare ahead of orca": 0, "mona ahead of orca": 0}
    for name in rows:
        aggs = {m: aggregate(cells, name, m) for m in COLUMNS}
        done = {m: a for m, a in aggs.items() if a and "mean" in a}
        if not done:
            continue
        best_value = min(a["mean"] for a in done.values())
        winners = [m for m, a in done.items() if a["mean"] == best_value]
        cross = {m: done[m] for m in CROSS_MODAL if m in done}
        lines.append(f"**{name}** ({ROWS[name]['metric']}): winner {' = '.join(winners)} "
                     f"({fmt_value(best_value, name)}); missing/failed: "
                     f"{', '.join(m for m in COLUMNS if m not in done) or 'none'}")
        if cross:
            best = min(cross, key=lambda m: cross[m]["mean"])
            vs_classical = compare(cross[best], aggs["classical"])
            vs_scratch = compare(cross[best], aggs["scratch"])
            lines.append(f"- best cross-modal: {best} ({fmt_value(cross[best]['mean'], name)})")
            lines.append(f"- beats the classical baseline: {verdict(vs_classical, 'yes', 'no')}")
            lines.append(f"- beats the scratch body: {verdict(vs_scratch, 'yes', 'no')}")
            counts["beats classical"] += vs_classical.startswith("<")
            counts["beats scratch"] += vs_scratch.startswith("<")
        default = compare(aggs["orca"], aggs["scratch"])
        lines.append(f"- the default method (orca) beats the scratch body: {verdict(default, 'yes', 'no')}")
        counts["orca beats scratch beyond seed noise"] += default.startswith("<") and "beyond" in default
        pare, mona = compare(aggs["pare"], aggs["orca"]), compare(aggs["mona"], aggs["orca"])
        lines.append(f"- PaRe ahead of ORCA: {verdict(pare, 'yes', 'no')}; MoNA ahead of ORCA: "
                     f"{verdict(mona, 'yes', 'no')}; seed papers' ordering (both ahead) holds: "
                     f"{'yes' if pare.startswith('<') and mona.startswith('<') else 'no'}")
        counts["pare ahead of orca"] += pare.startswith("<")
        counts["mona ahead of orca"] += mona.startswith("<")
        lines.append("")
    shown = sum(1 for name in rows if any(aggregate(cells, name, m) for m in COLUMNS))
    lines.append("Over the " + str(shown) + " row(s): " + "; ".join(f"{k}: {v}" for k, v in counts.items()))
    return lines


def time_budgets(cells: dict) -> list[float]:
    """The --budget-seconds values the cells ran with (none: step budgets)."""
    return sorted({c["budget_s"] for c in cells.values() if c.get("budget_s")})


def budget_rule(cells: dict) -> str:
    budgets = time_budgets(cells)
    if not budgets:
        return BUDGET_RULE
    mixed = any("budget_s" not in c and "label" not in c for c in cells.values())
    return (TIME_RULE + f" T = {', '.join(f'{b:g} s' for b in budgets)}" +
            (" — MIXED: some cells ran with a step budget" if mixed or len(budgets) > 1 else ""))


def write_table(cells: dict, command: str, out: Path, smoke: bool, env: str, invocation_s: float | None) -> Path:
    if out.resolve() == PROTECTED.resolve():
        raise SystemExit(f"refusing to overwrite {PROTECTED} (the earlier run); pick another --out")
    rows = [name for name in ROWS if any(k.startswith(f"{name}/") for k in cells)]
    scales = sorted({c.get("scale") for c in cells.values() if c.get("scale") is not None})
    lines = [f"# Quality: cross-modal methods vs fine-tuning, scratch and classical baselines ({BODY} body, CPU)", ""]
    if smoke:
        timed = time_budgets(cells)
        budget = (f"time budget {', '.join(f'{t:g} s' for t in timed)}" if timed else
                  "step budget (scale " + ", ".join(f"{s:g}" for s in scales) + ")")
        lines += [f"> **SMOKE RUN.** Tiny {budget}, "
                  "seeds as listed: "
                  "this only shows that every cell of the pipeline runs end to end. **The numbers say nothing "
                  "about the quality of any method** and must not be compared or quoted.", ""]
    lines += [f"Command: `{command}`  ", f"Table written: {dt.datetime.now().isoformat(timespec='seconds')}  ",
              f"Environment: {env}  "]
    if invocation_s:
        lines.append(f"This invocation took {invocation_s / 60:.1f} min wall time; sum of the cells' wall times "
                     f"in the table: {sum(c.get('wall_s', 0.0) for c in cells.values()) / 60:.1f} min.  ")
    lines += [("Seeds: `training.seed` = 0, 1, ... per run; dataset splits from core.data.fetch (seed 0 where the "
               "source has no test split). The classical baselines are deterministic and run once."), "",
              ("Cells: **test metric, lower is better** (0-1 error; relative L2 for darcy16 and burgers; mean ± "
               "sample std over seeds when more than one), then wall time of the whole job (model load, data "
               "preparation, stage 1, refinement, final test evaluation; mean per run), optimizer steps "
               "`refine + stage-1`, and the seeds."), "", f"**{budget_rule(cells)}**", "",
              "| dataset (metric) | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name in rows:
        lines.append(f"| {name} ({ROWS[name]['metric']}) | " +
                     " | ".join(fmt_cell(aggregate(cells, name, m), name) for m in COLUMNS) + " |")
    lines += ["", f"Step scale(s) used: {scales}" + (" — MIXED: cells ran at different scales" if len(scales) > 1
                                                      else ""), ""]
    lines += ["Settings (same for every model method of a row; scratch = finetune with `body.pretrained: false`):", ""]
    for name in rows:
        row = ROWS[name]
        budgets = ", ".join(str(max(1, round(row["max_steps"] * s))) for s in scales)
        timed = time_budgets({k: c for k, c in cells.items() if k.startswith(f"{name}/")})
        budget = (f"wall-clock budget {', '.join(f'{t:g} s' for t in timed)} per job (no step cap)" if timed else
                  f"refine budget B = {row['max_steps']} x scale = {budgets} steps")
        lines.append(f"- **{name}**: {row['note']}; batch {row['batch']}, {budget}, AdamW lr {row['lr']:g}, linear warm-up 10% then linear decay, "
                     f"clip 1.0, validation_fraction {row['validation_fraction']} (best-on-validation weights are "
                     f"tested; none: final weights); default seeds {row['seeds']}")
    for scale in scales:
        stage1 = stage1_settings(scale)
        lines.append(f"- **method settings at scale {scale:g}**: source proxy for orca/pare/mona/contrastive_pare "
                     f"{PROXY}; orca alignment {dict(ALIGN, epochs=stage1['orca'])} (objective otdd_exact, lr 10x, "
                     f"step decay); pare: core defaults (k0 half the tokens, w by task, k/k0 on refine progress, Gumbel for 5 "
                     f"epochs or a third of the run, tau 0.9); mona {dict(MONA, iterations=stage1['mona'])} (inner_lr 1e-3, lambda 1, beta 10x "
                     f"lr, source batch 32); contrastive_pare contrastive {CONTRASTIVE} (noise scales 0.1/0.3/0.5 "
                     f"x 2 steps, tau 0.1), then PaRe with attention scores; checkpoint.every_epochs 10000")
    failures = [(k, c) for k, c in sorted(cells.items()) if "error" in c]
    if failures:
        lines += ["", "## Failures", ""]
        for k, cell in failures:
            lines += [f"**{k}** ({cell.get('ran', '?')}): `{cell['error']}`", "", "```",
                      cell.get("traceback", "").rstrip(), "```", ""]
    lines += [""] + summary_lines(cells, rows)
    lines += ["", "When each cell ran:", ""]
    lines += [f"- {k}: {c.get('ran', '?')}" for k, c in sorted(cells.items())]
    notes = out.with_name(out.stem + "_notes.md")
    if notes.exists():  # hand-written analysis kept beside the generated table
        lines += ["", notes.read_text()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    write_runs(cells, out.with_name(out.stem + "_runs.json"))
    return out


def write_runs(cells: dict, path: Path) -> None:
    """Every run's raw result beside the table, one run a line: small enough to commit, and the
    same shape as the cells file, so `--merge` redraws the table from it."""
    runs = {k: {field: v for field, v in cell.items() if field != "traceback"} for k, cell in sorted(cells.items())}
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(run, sort_keys=True)}" for k, run in runs.items())
    path.write_text("{\n" + body + "\n}\n" if runs else "{}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--methods", default=",".join(COLUMNS))
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per cell (0..N-1) for every method; default: 3 for orca and scratch on every row, "
                             "and for the other methods 3 on darcy16 and dna-oct4-mafk, 1 otherwise")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="scale every row's budget so the model runs fit about this many minutes "
                             "(estimated at 4 min per method-row-seed at scale 1)")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply every row's refine budget (and ORCA/MoNA stage 1) by this "
                             "(overrides --budget-minutes)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help=f"the same wall-clock budget per model job (training.time_budget_seconds, stage 1 "
                             f"included; at most {MAX_BUDGET_SECONDS:g}); no refine step cap then")
    parser.add_argument("--lr", type=float, default=None, help="override every row's peak lr")
    parser.add_argument("--smoke", action="store_true",
                        help="label the output as a smoke run; default cells/out become the *_smoke files")
    parser.add_argument("--cells", type=Path, default=None, help="where finished cells are kept (JSON)")
    parser.add_argument("--out", type=Path, default=None, help="the markdown table to write")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="cells files from other runs (e.g. rows run in parallel) to merge, then redraw")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on 2 shared cores: 2 threads thrash under load)")
    args = parser.parse_args()
    cells_path = args.cells or (SMOKE_CELLS if args.smoke else CELLS)
    out = args.out or (SMOKE_OUT if args.smoke else OUT)
    torch.set_num_threads(args.threads)
    rows = [r for r in args.rows.split(",") if r]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [r for r in rows if r not in ROWS] + [m for m in methods if m not in COLUMNS]
    if unknown:
        parser.error(f"unknown row(s)/method(s): {unknown}")
    if args.budget_seconds is not None and not 0 < args.budget_seconds <= MAX_BUDGET_SECONDS:
        parser.error(f"--budget-seconds must be in (0, {MAX_BUDGET_SECONDS:g}], got {args.budget_seconds:g}")
    seeds = {(name, method): seeds_for(name, method, args.seeds) for name in rows for method in methods}
    model_runs = sum(len(s) for (name, method), s in seeds.items() if method != "classical")
    scale = 1.0
    if args.budget_minutes and model_runs:
        scale = min(4.0, args.budget_minutes / (4.0 * model_runs))
    if args.scale:
        scale = args.scale
    command = ".venv/bin/python bench/quality.py " + " ".join(sys.argv[1:])
    for other in args.merge:
        merged = load_cells(cells_path)
        merged.update(load_cells(other))
        save_cells(cells_path, merged)
    started, ran_any = time.perf_counter(), False
    env = environment()  # load average at the start of this invocation
    print(f"rows {rows}, methods {methods}, seeds {seeds}, step scale {scale:.3f}; {env}", flush=True)
    print(TIME_RULE + f" T = {args.budget_seconds:g} s" if args.budget_seconds else BUDGET_RULE, flush=True)
    stage1 = stage1_settings(scale)
    print(f"stage 1 at this scale: orca alignment epochs {stage1['orca']}, mona iterations {stage1['mona']} "
          f"(variant {MONA['variant']}), contrastive epochs {stage1['contrastive_pare']}; proxy {PROXY}", flush=True)
    for name in rows if methods else []:
        for method in methods:
            for seed in [None] if method == "classical" else seeds[(name, method)]:
                stamp = dt.datetime.now().isoformat(timespec="seconds")
                try:
                    if method == "classical":
                        start = time.perf_counter()
                        label, value = classical_for_row(name)
                        cell = {"value": value, "label": label, "wall_s": time.perf_counter() - start}
                    else:
                        cell = cross_modal(name, method, scale, seed, args.lr, args.budget_seconds)
                except Exception as exc:  # noqa: BLE001 - keep going: one broken method must not lose the other cells
                    cell = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                    print(cell["traceback"], file=sys.stderr, flush=True)
                cell.update(ran=stamp, scale=scale, seed=seed)
                cells = load_cells(cells_path)  # re-read: another process may have added cells meanwhile
                cells[key(name, method, seed)] = cell
                save_cells(cells_path, cells)
                single = {"mean": cell.get("value"), "std": 0.0, "n": 1, "runs": [cell], "failed": [], "seeds": [seed]}
                shown = cell["error"][:100] if "error" in cell else fmt_cell(single, name)
                print(f"{name:>14} {method:>16} seed {seed}: {shown.replace('<br>', '; ')}", flush=True)
                ran_any = True
                write_table(cells, command, out, args.smoke, env, time.perf_counter() - started)
    print(write_table(load_cells(cells_path), command, out, args.smoke, env,
                      time.perf_counter() - started if ran_any else None))


if __name__ == "__main__":
    main()
