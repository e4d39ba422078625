"""`core.run`: one job from config and data to a final checkpoint and a summary, with callbacks.

The same function serves `xmodal train` (callbacks write files and a progress bar) and the worker
(callbacks write the database and read the cancel flag).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from core.callbacks import Callback, CallbackList, CheckpointSaved
from core.checkpoint import save_model
from core.config import JobConfig
from core.data.prepare import prepare_data
from core.methods import recipe_for
from core.model import ModelSpec, build_model
from core.training.context import StopRequested, TrainContext
from core.training.evaluate import evaluate_split
from core.training.refine import refine_total_steps


@dataclass(frozen=True)
class RunResult:
    status: Literal["completed", "stopped"]
    summary: dict
    checkpoint_dir: Path
    step: int


def pick_device() -> torch.device:
    """CUDA when available (CUDA_VISIBLE_DEVICES decides which), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_context(config: JobConfig, train_path: Path, out_dir: Path, validation_path: Path | None,
                  callbacks: Sequence[Callback], device: torch.device | None = None) -> TrainContext:
    torch.manual_seed(config.training.seed)
    data = prepare_data(config, Path(train_path), Path(validation_path) if validation_path else None)
    spec = ModelSpec(task=data.task, input_shape=data.input_shape, target_shape=data.target_shape,
                     num_classes=data.num_classes)
    model, body = build_model(config, spec)
    device = device or pick_device()
    body.source_embedding.to(device)
    ctx = TrainContext(config=config, data=data, spec=spec, model=model.to(device), body=body, device=device,
                       out_dir=Path(out_dir), callbacks=CallbackList(list(callbacks)), total_steps=0)
    ctx.final_stage_from = recipe_for(config.method).planned_steps(ctx)
    ctx.total_steps = ctx.final_stage_from + refine_total_steps(ctx)
    return ctx


def finish(ctx: TrainContext) -> dict:
    """Select the best weights, evaluate validation and test once, write the final checkpoint."""
    ctx.position.stage = "evaluate"
    if ctx.best_state is not None:
        ctx.model.load_state_dict(ctx.best_state)
    norm, batch = ctx.data.normalisation, ctx.config.training.batch_size
    summary: dict = {"task": ctx.spec.task.value, "method": ctx.config.method, "steps": ctx.position.step}
    for name, split in (("validation", ctx.data.validation), ("test", ctx.data.test)):
        if split is None:
            continue
        metrics = evaluate_split(ctx.model, split, ctx.spec.task, norm.y_mean, norm.y_std, ctx.device, batch,
                                 ctx.autocast())
        summary[name] = metrics
        for key, value in metrics.items():
            ctx.metric(key, value, f"final_{name}")
    final = ctx.out_dir / "checkpoint"
    save_model(final, ctx.model, ctx.manifest(step=ctx.position.step, stage="evaluate", summary=summary))
    ctx.callbacks.on_checkpoint(CheckpointSaved(path=final, step=ctx.position.step, epoch=ctx.position.stage_epoch,
                                                stage="evaluate", metrics=summary.get("test", {}), final=True))
    (ctx.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    ctx.event("finished", summary=summary)
    return summary


def run(config: JobConfig, train_path: Path, out_dir: Path, *, validation_path: Path | None = None,
        callbacks: Sequence[Callback] = (), resume_from: Path | None = None,
        device: torch.device | None = None) -> RunResult:
    """Run a whole job; returns `stopped` (after a checkpoint) when a callback asked to stop."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = build_context(config, train_path, out_dir, validation_path, callbacks, device)
    if resume_from is not None:
        ctx.restore(Path(resume_from))
        ctx.event(f"resumed from step {ctx.position.step}", checkpoint=str(resume_from),
                  resumed_from_step=ctx.position.step, resumed_stage=ctx.position.stage)
    else:
        ctx.event(f"{config.method} on {ctx.spec.task.value}: input {ctx.spec.input_shape}, "
                  f"{len(ctx.data.train)} train samples, body {config.body.name}, device {ctx.device.type}")
    try:
        recipe_for(config.method).run(ctx)
    except StopRequested as stop:
        ctx.event("stopped on request", level="warning")
        return RunResult("stopped", {}, stop.checkpoint, ctx.position.step)
    summary = finish(ctx)
    return RunResult("completed", summary, out_dir / "checkpoint", ctx.position.step)
