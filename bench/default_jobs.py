"""A default job per quality row: the config a new user writes (only `method`), timed and scored.

    .venv/bin/python bench/default_jobs.py [--rows digits,gunpoint] [--method orca] [--seeds 1]
                                           [--runs FILE] [--out FILE]

Issue 13's target: a job with only `method` set finishes within 10 minutes on this CPU on every
row, and beats the classical baseline on digits and GunPoint. Everything else is core's default
(minilm-l6, `training.epochs: auto`, `alignment.proxy: auto`, batch 32, lr 1e-4, 64 tokens at
most). Each line: the test metric, the classical baseline the quality table uses (bench/quality.py)
and the one the job fitted itself (`summary["baseline"]`), the wall time, the optimizer steps and
the proxy it chose. Finished runs are kept in `--runs` (JSON), so rows can run in parallel processes
and be redrawn together (`--rows ""` with the runs files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, environment, mean_std
from bench.quality import ROWS, classical_for_row, fmt_value, run_job
from core.callbacks import Callback, Event

LIMIT_S = 600.0
MUST_BEAT = ("digits", "gunpoint")
OUT = RESULTS / "default_jobs.md"


@dataclass
class ChosenProxy(Callback):
    """The proxy `alignment.proxy: auto` chose, from its event."""

    name: str | None = None

    def on_event(self, event: Event) -> None:
        if "distances" in event.data:
            self.name = event.data.get("proxy")


def run_row(name: str, method: str, seed: int) -> dict:
    """One default job; the classical baseline of the quality table beside it."""
    config = {"method": method} if seed == 0 else {"method": method, "training": {"seed": seed}}
    proxy = ChosenProxy()
    cell = run_job(name, config, (proxy,))
    cell["proxy"] = proxy.name
    label, value = classical_for_row(name)
    cell.update(classical=value, classical_label=label, seed=seed, ran=dt.datetime.now().isoformat("T", "seconds"))
    return cell


def table(runs: dict, command: str, env: str) -> str:
    lines = ["# Default jobs: only `method` set (bench/default_jobs.py)", "",
             f"Command: `{command}`  ", f"Table written: {dt.datetime.now().isoformat(timespec='seconds')}  ",
             f"Environment: {env}", "",
             "Cells: test metric (lower is better; 0-1 error, relative L2 for darcy16 / burgers), mean ± std over "
             "seeds; the quality table's classical baseline and the job's own (`summary.baseline`, fitted on "
             "the job's split); the wall time of the whole job (the longest seed) against the 10-minute target; "
             "optimizer steps (refine + stage 1); the proxy `alignment.proxy: auto` chose.", "",
             "| row | method | test | classical (bench) | job's baseline | wall (max) | within 10 min | beats classical | steps | proxy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        failed = [r for k, r in sorted(runs.items()) if k.split("/")[0] == name and "error" in r]
        mine = [r for k, r in sorted(runs.items()) if k.split("/")[0] == name and "error" not in r]
        if failed:
            lines.append(f"| {name} | {failed[0]['method']} | failed: {failed[0]['error']} |" + " |" * 7)
        if not mine:
            continue
        mean, std = mean_std([r["value"] for r in mine])
        wall = max(r["wall_s"] for r in mine)
        classical_value = mine[0]["classical"]
        gap = mean - classical_value
        beats = "yes" if gap < 0 else f"no (+{fmt_value(gap, name)})"
        if name in MUST_BEAT:
            beats += " — target"
        own = "; ".join(sorted({f"{r['baseline']['method']} {fmt_value(r['baseline']['test'][ROWS[name]['metric']], name)}"
                                for r in mine if r.get("baseline")})) or "—"
        steps = ", ".join(f"{r['refine_steps']} + {r['stage1_steps']}" for r in mine)
        proxies = ", ".join(sorted({str(r.get("proxy")) for r in mine}))
        value = fmt_value(mean, name) + (f" ± {fmt_value(std, name)}" if len(mine) > 1 else "")
        lines.append(f"| {name} | {mine[0]['method']} | {value} (n={len(mine)}) | {fmt_value(classical_value, name)} "
                     f"({mine[0]['classical_label']}) | {own} | {wall / 60:.1f} min | "
                     f"{'yes' if wall <= LIMIT_S else 'NO'} | {beats} | {steps} | {proxies} |")
    return "\n".join(lines) + "\n"


def save(path: Path, runs: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--method", default="orca", help="the job's only setting (core's default method: orca)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--runs", type=Path, nargs="*", default=[RESULTS / "default_jobs_runs.json"],
                        help="runs files to read; the first is written")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    runs: dict = {}
    for path in args.runs:
        if path.exists():
            runs.update(json.loads(path.read_text()))
    env = environment()
    for name in [r for r in args.rows.split(",") if r]:
        for seed in range(args.seeds):
            key = f"{name}/{args.method}/{seed}"
            if key in runs:
                continue
            try:
                cell = run_row(name, args.method, seed)
            except Exception as exc:  # noqa: BLE001 - one failed row is reported, the others still run
                runs[key] = {"error": f"{type(exc).__name__}: {exc}", "method": args.method}
                print(f"{key}: FAILED {runs[key]['error']}", flush=True)
                save(args.runs[0], runs)
                continue
            cell["method"] = args.method
            runs[key] = cell
            print(f"{key}: {fmt_value(cell['value'], name)} (classical {fmt_value(cell['classical'], name)}), "
                  f"{cell['wall_s']:.0f} s, {cell['refine_steps']} + {cell['stage1_steps']} steps, "
                  f"proxy {cell.get('proxy')}", flush=True)
            save(args.runs[0], runs)
    save(args.runs[0], runs)  # with several runs files: merged into the first
    args.out.write_text(table(runs, "python " + " ".join(sys.argv), env))
    print(args.out)


if __name__ == "__main__":
    main()
