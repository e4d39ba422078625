"""`core.run`: one job from config and data to a final checkpoint and a summary, with callbacks.

The same function serves `xmodal train` (callbacks write files and a progress bar) and the worker
(callbacks write the database and say when to stop). It never raises for what happens inside the
run: the `RunResult` says how it ended, with the exception when it failed, so that each caller
translates an error once, at its own edge.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from core.baseline import comparison, fit_baseline
from core.callbacks import Callback, CallbackList, CheckpointSaved
from core.checkpoint import save_model
from core.config import JobConfig
from core.data.prepare import prepare_data
from core.methods import Recipe, recipe_for
from core.modeling.model import ModelSpec, build_model
from core.result import RunResult
from core.training.evaluate import evaluate_split
from core.training.refine import budget_of, refine
from core.training.run import PRE_REFINE_SHARE, Run, StopRequested

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """CUDA when available (CUDA_VISIBLE_DEVICES decides which), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_run(config: JobConfig, train_path: Path, out_dir: Path, validation_path: Path | None,
              callbacks: Sequence[Callback], device: torch.device | None = None,
              model_roots: Sequence[Path] = ()) -> Run:
    started = time.monotonic()  # a time budget counts set-up too
    torch.manual_seed(config.training.seed)
    data = prepare_data(config, Path(train_path), Path(validation_path) if validation_path else None)
    spec = ModelSpec(task=data.task, input_shape=data.input_shape, target_shape=data.target_shape,
                     num_classes=data.num_classes)
    model, body = build_model(config, spec)
    device = device or pick_device()
    body.source_embedding.to(device)
    run = Run(config=config, data=data, spec=spec, model=model.to(device), body=body, device=device,
              out_dir=Path(out_dir), callbacks=CallbackList(list(callbacks)), total_steps=0,
              model_roots=tuple(Path(root) for root in model_roots),
              time_budget=config.training.time_budget_seconds, started=started)
    recipe = recipe_for(config.method)
    run.final_stage_from = sum(stage.steps(config, len(data.train)) for stage in recipe.stages)
    run.total_steps = run.final_stage_from + budget_of(run).steps
    return run


def walk(run: Run, recipe: Recipe) -> None:
    """The recipe's stages in order (skipping those with no steps, and those a resumed run has
    finished), then its refine stage."""
    for stage in recipe.stages:
        if stage.steps(run.config, len(run.data.train)) and not run.has_finished(stage.name, recipe.stage_names):
            stage.run(run)
    (recipe.refine or refine)(run)


def report_baseline(run: Run, summary: dict) -> dict:
    """Fit the classical baseline on the run's own splits and say in an event how the model compares."""
    evaluation = run.config.evaluation
    baseline = fit_baseline(run.data, evaluation.baseline_seconds, seed=run.config.training.seed,
                            metric=evaluation.metric).as_dict()
    run.event(comparison(summary, baseline), baseline=baseline)
    return baseline


def finish(run: Run) -> dict:
    """Select the best weights, evaluate validation and test once (and the classical baseline beside
    them), write the final checkpoint."""
    run.position.stage = "evaluate"
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    norm, batch = run.data.normalisation, run.config.training.batch_size
    summary: dict = {"task": run.spec.task.value, "method": run.config.method, "steps": run.position.step}
    for name, split in (("validation", run.data.validation), ("test", run.data.test)):
        if split is None:
            continue
        metrics = evaluate_split(run.model, split, run.spec.task, norm.y_mean, norm.y_std, run.device, batch,
                                 run.autocast())
        summary[name] = metrics
        for key, value in metrics.items():
            run.metric(key, value, f"final_{name}")
    if run.config.evaluation.baseline:
        summary["baseline"] = report_baseline(run, summary)
    final = run.out_dir / "checkpoint"
    save_model(final, run.model, run.manifest(step=run.position.step, stage="evaluate", summary=summary))
    run.callbacks.on_checkpoint(CheckpointSaved(path=final, step=run.position.step, epoch=run.position.stage_epoch,
                                                stage="evaluate", metrics=summary.get("test", {}), final=True))
    (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    run.event("finished", summary=summary)
    return summary


def announce_budget(run: Run) -> None:
    """An event with the refine step count and how it was chosen, and the time budget if any."""
    training, budget = run.config.training, budget_of(run)
    deadline = (f"; time budget {training.time_budget_seconds:g} s (stages before refine may use "
                f"{PRE_REFINE_SHARE:.0%} of it)" if training.time_budget_seconds else "")
    run.event(budget.describe(len(run.data.train), training.batch_size) + deadline,
              refine_steps=budget.steps, refine_epochs=budget.epochs, steps_per_epoch=budget.steps_per_epoch,
              train_size=len(run.data.train), batch_size=training.batch_size, epochs=training.epochs,
              max_steps=training.max_steps, budget_rule=budget.rule,
              time_budget_seconds=training.time_budget_seconds)


def _train(config: JobConfig, train_path: Path, out_dir: Path, validation_path: Path | None,
           callbacks: Sequence[Callback], resume_from: Path | None, device: torch.device | None,
           model_roots: Sequence[Path]) -> RunResult:
    run = build_run(config, train_path, out_dir, validation_path, callbacks, device, model_roots)
    if resume_from is not None:
        run.restore(Path(resume_from))
        run.event(f"resumed from step {run.position.step}", checkpoint=str(resume_from),
                  resumed_from_step=run.position.step, resumed_stage=run.position.stage)
    else:
        run.event(f"{config.method} on {run.spec.task.value}: input {run.spec.input_shape}, "
                  f"{len(run.data.train)} train samples, body {config.body.name}, device {run.device.type}")
    announce_budget(run)
    try:
        walk(run, recipe_for(config.method))
    except StopRequested as stop:
        run.event(f"stopped on request ({stop.reason})", level="warning")
        return RunResult(stop.reason, run.position.step, stop.checkpoint)
    summary = finish(run)
    return RunResult("completed", run.position.step, out_dir / "checkpoint", summary)


def run(config: JobConfig, train_path: Path, out_dir: Path, *, validation_path: Path | None = None,
        callbacks: Sequence[Callback] = (), resume_from: Path | None = None,
        device: torch.device | None = None, model_roots: Sequence[Path] = ()) -> RunResult:
    """Run a whole job. `completed`, or the reason a callback gave to stop (after a checkpoint), or
    `failed` with the exception the run raised (a `UserError` when the job or its data is at fault).
    `model_roots`: the deployment's model roots, where `alignment.proxy: auto` finds custom proxies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(config, train_path, out_dir, validation_path, callbacks, resume_from, device, model_roots)
    except Exception as exc:  # noqa: BLE001 - returned, not swallowed: the caller translates it
        log.debug("run failed", exc_info=True)
        return RunResult("failed", error=exc)
