"""ORCA: align the embedder to a source proxy (only f trains), then refine everything.

Alignment follows the reference: per target class c (weight = class frequency) the objective
compares the proxy's labelled features with up to `maxsamples` embedded samples of c; gradients
accumulate over classes and one optimizer step is taken per epoch, at 10x the fine-tuning lr with
step decay x0.2 at a third and two thirds of the epochs. Targets without classes get k-means
pseudo-labels.
"""

from __future__ import annotations

import numpy as np
import torch

from core.alignment import build_objective, kmeans_pseudo_labels
from core.config import TaskType
from core.proxies import load_proxy_bank
from core.training.context import TrainContext
from core.training.optim import build_optimizer
from core.training.refine import refine


def alignment_labels(ctx: TrainContext) -> np.ndarray:
    """Class labels, or k-means pseudo-labels on the targets of non-class tasks."""
    y = ctx.data.train.y.numpy()
    if ctx.spec.task == TaskType.classification:
        return y
    return kmeans_pseudo_labels(y.reshape(len(y), -1), k=ctx.config.alignment.pseudo_labels, seed=ctx.config.training.seed)


def align(ctx: TrainContext) -> None:
    cfg, training = ctx.config.alignment, ctx.config.training
    epochs = ctx.config.alignment_epochs
    pos = ctx.position
    bank = load_proxy_bank(cfg.proxy, ctx.body, cfg.proxy_samples, ctx.config.embedder.target_seq_len)
    objective = build_objective(cfg.objective, bank.features.to(ctx.device), bank.labels.to(ctx.device),
                                epsilon=cfg.epsilon)
    ctx.register_optimizer("align_objective", objective)  # OTDD's warm-start store: exact resume
    labels = torch.from_numpy(alignment_labels(ctx))
    classes, counts = torch.unique(labels, return_counts=True)
    weights = counts.double() / counts.sum()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    embedder = ctx.model.embedder
    optimizer = build_optimizer(embedder.parameters(), training, cfg.lr or 10 * training.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, epochs // 3), max(1, 2 * epochs // 3)], 0.2)
    ctx.register_optimizer("align_optimizer", optimizer)
    ctx.register_optimizer("align_scheduler", scheduler)
    ctx.enter_stage("align", f"align: {cfg.objective} to proxy {bank.name} ({len(bank.labels)} samples), "
                             f"{epochs} epochs over {len(classes)} target classes")
    embedder.train()
    while pos.stage_epoch < epochs:
        epoch = pos.stage_epoch
        generator = torch.Generator().manual_seed(training.seed * 100_003 + epoch)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for weight, index in zip(weights.tolist(), members):
            chosen = index[torch.randperm(len(index), generator=generator)[: cfg.maxsamples]]
            tokens, _ = embedder(ctx.data.train.x[chosen].to(ctx.device))
            loss = weight * objective(tokens.float().mean(dim=1), torch.zeros(len(chosen), dtype=torch.long,
                                                                              device=ctx.device))
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        scheduler.step()
        pos.stage_epoch = epoch + 1
        ctx.metric(cfg.objective, total, "align", epoch)
        ctx.step_done()
    ctx.save_checkpoint({cfg.objective: total} if epochs else {})


def run(ctx: TrainContext) -> None:
    if ctx.config.alignment_epochs and ctx.position.stage in ("setup", "align"):
        align(ctx)
    refine(ctx)


def planned_steps(ctx: TrainContext) -> int:
    return ctx.config.alignment_epochs
