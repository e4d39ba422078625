"""Optimizers and per-step learning-rate schedules (linear warm-up, then linear / cosine / constant)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from core.config import TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from core.modeling.model import CrossModalModel

ParamGroup = dict[str, Any]


def refine_param_groups(model: CrossModalModel, config: TrainingConfig) -> list[ParamGroup]:
    """The pretrained body at `lr`; every other trainable part at `lr x new_parts_lr_multiplier`: the
    embedder, head and recipe modules start from scratch, and at the body's lr they lag far behind."""
    pretrained = {id(p) for p in model.body.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) in pretrained], "lr": config.lr},
              {"params": [p for p in trainable if id(p) not in pretrained],
               "lr": config.lr * config.new_parts_lr_multiplier}]
    return [group for group in groups if group["params"]]


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[ParamGroup], config: TrainingConfig,
                    lr: float) -> torch.optim.Optimizer:
    """`params`: parameters (the frozen ones are left out) at `lr`, or param groups that carry their own lr."""
    params = list(params)
    if params and not isinstance(params[0], dict):
        params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def lr_factor(step: float, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int,
                    time_progress: Callable[[], float] = lambda: 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """`time_progress()` in [0, 1] is how much of a time budget the stage has used: the schedule is where
    the steps or the time put it, whichever is further, so the lr reaches its end at a deadline too."""
    warmup = int(config.warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(max(step, time_progress() * total_steps), total_steps, warmup,
                                          config.schedule))
