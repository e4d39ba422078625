"""The refine stage: fine-tune embedder, body and head on the task loss (every recipe ends with it).

Reads top to bottom: batch, forward under autocast, scaled backward, clip, step, schedule, log,
validate at epoch end, checkpoint. A recipe can swap the loss (patch replacement mixes tokens) and
report at each epoch's start; everything else is shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from core.config import SELECTION_METRIC, TaskType
from core.modeling.model import CrossModalModel, apply_freeze
from core.modeling.tasks import task_loss
from core.training.budget import RefineBudget, refine_budget
from core.training.evaluate import evaluate_split
from core.training.optim import build_optimizer, build_scheduler, refine_param_groups
from core.training.run import Run

LOG_EVERY = 10  # optimizer steps between train-loss points (each costs a device sync)


class LossFn(Protocol):
    """`progress` in [0, 1]: the share of the stage's optimizer steps done, for schedules that must
    follow the real budget (epochs, max_steps or time), not the epoch count."""

    def __call__(self, model: CrossModalModel, x: torch.Tensor, y: torch.Tensor, epoch: int,
                 batch: int, progress: float) -> torch.Tensor: ...


@dataclass(frozen=True)
class TaskLoss:
    """The task's own loss on the model's output (targets de-normalised where the task needs it)."""

    task: TaskType
    y_mean: float
    y_std: float

    def __call__(self, model: CrossModalModel, x: torch.Tensor, y: torch.Tensor, epoch: int,
                 batch: int, progress: float) -> torch.Tensor:
        return task_loss(self.task, model(x), y, self.y_mean, self.y_std)


def plain_loss(run: Run) -> TaskLoss:
    return TaskLoss(run.spec.task, run.data.normalisation.y_mean, run.data.normalisation.y_std)


def budget_of(run: Run) -> RefineBudget:
    return refine_budget(run.config.training, len(run.data.train))


def validate(run: Run, epoch: int) -> dict[str, float]:
    """Validation metrics; keeps a copy of the best weights for model selection (never the test split)."""
    if run.data.validation is None:
        return {}
    norm, cfg = run.data.normalisation, run.config
    metrics = evaluate_split(run.model, run.data.validation, run.spec.task, norm.y_mean, norm.y_std, run.device,
                             cfg.training.batch_size, run.autocast())
    for key, value in metrics.items():
        run.metric(key, value, "validation", epoch)
    selected = metrics.get(cfg.evaluation.metric or SELECTION_METRIC[run.spec.task], float("nan"))
    if selected == selected and selected < run.position.best_metric:
        run.position.best_metric, run.position.best_epoch = selected, epoch
        run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    return metrics


def _log_train(run: Run, running: torch.Tensor, steps: int, scheduler: torch.optim.lr_scheduler.LRScheduler,
               epoch: int) -> tuple[torch.Tensor, int]:
    """Report the mean train loss over the last `steps` optimizer steps; returns reset accumulators."""
    run.metric("loss", running.item() / steps, "train", epoch)
    run.metric("lr", scheduler.get_last_lr()[0], "train", epoch)
    return torch.zeros_like(running), 0


def refine(run: Run, loss_fn: LossFn | None = None,
           on_epoch_start: Callable[[Run, int, float], None] | None = None) -> None:
    cfg = run.config.training
    model, data, pos = run.model, run.data, run.position
    loss_fn = loss_fn or plain_loss(run)
    apply_freeze(model, run.config.freeze)
    budget = budget_of(run)
    total = budget.steps
    optimizer = build_optimizer(refine_param_groups(model, cfg), cfg, cfg.lr)
    # time counts from refine's own start: until enter_stage, the run's clock is still the previous stage's
    scheduler = build_scheduler(optimizer, cfg, total,
                                lambda: run.time_progress() if pos.stage == "refine" else 0.0)
    run.track_state("refine_optimizer", optimizer)
    run.track_state("refine_scheduler", scheduler)
    scaler = torch.amp.GradScaler(enabled=run.device.type == "cuda" and cfg.precision == "fp16")
    run.enter_stage("refine", f"refine: {budget.epochs} epochs, {total} optimizer steps, freeze={run.config.freeze}")
    stage_start = pos.step - scheduler.last_epoch  # global step at which this stage began

    def progress() -> float:
        return run.progress(pos.step - stage_start, total)

    batches = math.ceil(len(data.train) / cfg.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    running, since_log = torch.zeros((), device=run.device), 0
    while pos.stage_epoch < budget.epochs and pos.step - stage_start < total and not run.out_of_time():
        epoch = pos.stage_epoch
        order = run.epoch_order(epoch)
        if on_epoch_start is not None and pos.batch == 0:
            on_epoch_start(run, epoch, progress())
        while pos.batch < batches and pos.step - stage_start < total and not run.out_of_time():
            batch = pos.batch
            index = order[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]
            x = data.train.x[index].to(run.device, non_blocking=True)
            y = data.train.y[index].to(run.device, non_blocking=True)
            with run.autocast():
                loss = loss_fn(model, x, y, epoch, batch, progress()) / cfg.grad_accumulation
            scaler.scale(loss).backward()
            running += loss.detach()
            pos.batch += 1
            if pos.batch % cfg.grad_accumulation and pos.batch < batches:
                continue
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            since_log += 1
            if since_log == LOG_EVERY:
                running, since_log = _log_train(run, running, since_log, scheduler, epoch)
            run.step_done()
        if since_log:
            running, since_log = _log_train(run, running, since_log, scheduler, epoch)
        run.finish_epoch()
        metrics = validate(run, epoch)
        if (epoch + 1) % run.config.checkpoint.every_epochs == 0:
            run.save_checkpoint(metrics)
