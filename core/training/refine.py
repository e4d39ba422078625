"""The refine stage: fine-tune embedder, body and head on the task loss (every recipe ends with it).

Reads top to bottom: batch, forward under autocast, scaled backward, clip, step, schedule, log,
validate at epoch end, checkpoint. A recipe can swap the loss (patch replacement mixes tokens) and
the stage name; everything else is shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from core.callbacks import Stage
from core.model import apply_freeze
from core.config import SELECTION_METRIC
from core.tasks import task_loss
from core.training.context import TrainContext
from core.training.evaluate import evaluate_split
from core.training.optim import build_optimizer, build_scheduler

LossFn = Callable[[TrainContext, torch.Tensor, torch.Tensor, int], torch.Tensor]
LOG_EVERY = 10  # optimizer steps between train-loss points (each costs a device sync)


def plain_loss(ctx: TrainContext, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
    norm = ctx.data.normalisation
    return task_loss(ctx.spec.task, ctx.model(x), y, norm.y_mean, norm.y_std)


def steps_per_epoch(ctx: TrainContext) -> int:
    cfg = ctx.config.training
    return math.ceil(math.ceil(len(ctx.data.train) / cfg.batch_size) / cfg.grad_accumulation)


def refine_total_steps(ctx: TrainContext) -> int:
    total = ctx.config.training.epochs * steps_per_epoch(ctx)
    max_steps = ctx.config.training.max_steps
    return min(total, max_steps) if max_steps else total


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The batch order of an epoch depends only on (seed, epoch), so a resumed run replays it."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def validate(ctx: TrainContext, epoch: int) -> dict[str, float]:
    """Validation metrics; keeps a copy of the best weights for model selection (never the test split)."""
    if ctx.data.validation is None:
        return {}
    norm, cfg = ctx.data.normalisation, ctx.config
    metrics = evaluate_split(ctx.model, ctx.data.validation, ctx.spec.task, norm.y_mean, norm.y_std, ctx.device,
                             cfg.training.batch_size, ctx.autocast())
    for key, value in metrics.items():
        ctx.metric(key, value, "validation", epoch)
    selected = metrics.get(cfg.evaluation.metric or SELECTION_METRIC[ctx.spec.task], float("nan"))
    if selected == selected and selected < ctx.position.best_metric:
        ctx.position.best_metric, ctx.position.best_epoch = selected, epoch
        ctx.best_state = {k: v.detach().to("cpu", copy=True) for k, v in ctx.model.state_dict().items()}
    return metrics


def _log_train(ctx: TrainContext, running: torch.Tensor, steps: int, scheduler: torch.optim.lr_scheduler.LRScheduler,
               epoch: int) -> tuple[torch.Tensor, int]:
    """Report the mean train loss over the last `steps` optimizer steps; returns reset accumulators."""
    ctx.metric("loss", running.item() / steps, "train", epoch)
    ctx.metric("lr", scheduler.get_last_lr()[0], "train", epoch)
    return torch.zeros_like(running), 0


def refine(ctx: TrainContext, loss_fn: LossFn = plain_loss, stage: Stage = "refine") -> None:
    cfg = ctx.config.training
    model, data, pos = ctx.model, ctx.data, ctx.position
    apply_freeze(model, ctx.config.freeze)
    total = refine_total_steps(ctx)
    optimizer = build_optimizer(model.parameters(), cfg, cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, total)
    ctx.register_optimizer(f"{stage}_optimizer", optimizer)
    ctx.register_optimizer(f"{stage}_scheduler", scheduler)
    scaler = torch.amp.GradScaler(enabled=ctx.device.type == "cuda" and cfg.precision == "fp16")
    ctx.enter_stage(stage, f"{stage}: {cfg.epochs} epochs, {total} optimizer steps, freeze={ctx.config.freeze}")
    stage_start = pos.step - scheduler.last_epoch  # global step at which this stage began
    batches = math.ceil(len(data.train) / cfg.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    running, since_log = torch.zeros((), device=ctx.device), 0
    while pos.stage_epoch < cfg.epochs and pos.step - stage_start < total:
        epoch = pos.stage_epoch
        order = epoch_order(cfg.seed, epoch, len(data.train))
        while pos.batch < batches and pos.step - stage_start < total:
            index = order[pos.batch * cfg.batch_size:(pos.batch + 1) * cfg.batch_size]
            x = data.train.x[index].to(ctx.device, non_blocking=True)
            y = data.train.y[index].to(ctx.device, non_blocking=True)
            with ctx.autocast():
                loss = loss_fn(ctx, x, y, epoch) / cfg.grad_accumulation
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
                running, since_log = _log_train(ctx, running, since_log, scheduler, epoch)
            ctx.step_done()
        if since_log:
            running, since_log = _log_train(ctx, running, since_log, scheduler, epoch)
        pos.stage_epoch, pos.batch = epoch + 1, 0
        metrics = validate(ctx, epoch)
        if (epoch + 1) % ctx.config.checkpoint.every_epochs == 0:
            ctx.save_checkpoint(metrics)
