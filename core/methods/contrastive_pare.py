"""Contrastive + patch replacement (the seed's proposal): contrastive embedder training, then PaRe.

Stage 1 (`contrastive`): only the embedder f trains. Each target batch is expanded on the fly into
K noise scales x T steps of views; z = mean-pooled f(view); the label-weighted contrastive loss of
`core.components.contrastive` pulls same-label views together. One optimizer step per batch, at 10x
the fine-tuning lr (the convention of the other embedder stages). Non-class targets get k-means
pseudo-labels (k = `alignment.pseudo_labels`), and their flattened targets serve as the label
vectors for the correlation weights.
Stage 2 (`refine`): patch replacement as in PaRe, but tokens are scored by the attention weight of
a pooled query over them; `contrastive.freeze_embedder` keeps f as stage 1 left it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.alignment import kmeans_pseudo_labels
from core.components.contrastive import contrastive_loss, noise_views, pair_weights
from core.components.patch_replacement import AttentionScorer, attached, build_replacement_loss
from core.config import TaskType
from core.training.context import TrainContext
from core.training.optim import build_optimizer
from core.training.refine import epoch_order, refine


def labels_and_vectors(ctx: TrainContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (classes or k-means pseudo-labels) and the label vectors their correlation is taken of."""
    y = ctx.data.train.y
    if ctx.spec.task == TaskType.classification:
        return y.long(), F.one_hot(y.long(), ctx.spec.num_classes or int(y.max()) + 1).float()
    targets = y.float().reshape(len(y), -1)
    labels = torch.from_numpy(kmeans_pseudo_labels(targets.numpy(), k=ctx.config.alignment.pseudo_labels,
                                                   seed=ctx.config.training.seed)).long()
    if targets.shape[1] < 2:  # a correlation needs vectors: use the pseudo-label's one-hot
        return labels, F.one_hot(labels).float()
    return labels, targets


def contrastive_stage(ctx: TrainContext) -> None:
    cfg, training, pos = ctx.config.contrastive, ctx.config.training, ctx.position
    labels, vectors = labels_and_vectors(ctx)
    embedder, train = ctx.model.embedder, ctx.data.train
    optimizer = build_optimizer(embedder.parameters(), training, 10 * training.lr)
    ctx.register_optimizer("contrastive_optimizer", optimizer)
    views = len(cfg.noise_scales) * cfg.noise_steps
    batches = math.ceil(len(train) / training.batch_size)
    ctx.enter_stage("contrastive", f"contrastive: {cfg.epochs} epochs, {views} noise views per sample, "
                                   f"{len(labels.unique())} labels, tau={cfg.temperature}")
    embedder.train()
    while pos.stage_epoch < cfg.epochs:
        epoch = pos.stage_epoch
        order = epoch_order(training.seed, epoch, len(train))
        total, seen = 0.0, 0
        while pos.batch < batches:
            index = order[pos.batch * training.batch_size:(pos.batch + 1) * training.batch_size]
            generator = torch.Generator().manual_seed(training.seed * 1_000_003 + epoch * 10_007 + pos.batch)
            x = noise_views(train.x[index].to(ctx.device), cfg.noise_scales, cfg.noise_steps, generator)
            view_labels, view_vectors = labels[index].repeat(views).to(ctx.device), vectors[index].repeat(views, 1)
            weights = pair_weights(view_labels, view_vectors.to(ctx.device), cfg.correlation_eps)
            with ctx.autocast():
                z = embedder(x)[0].float().mean(dim=1)
            loss = contrastive_loss(z, view_labels, weights, cfg.temperature)
            loss.backward()
            if training.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(embedder.parameters(), training.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total, seen = total + float(loss.detach()), seen + 1
            pos.batch += 1
            ctx.step_done()
        pos.stage_epoch, pos.batch = epoch + 1, 0
        metrics = {"contrastive_loss": total / seen} if seen else {}
        for key, value in metrics.items():
            ctx.metric(key, value, "contrastive", epoch)
        ctx.save_checkpoint(metrics)


def run(ctx: TrainContext) -> None:
    if ctx.config.contrastive.epochs and ctx.position.stage in ("setup", "contrastive"):
        contrastive_stage(ctx)
    loss = build_replacement_loss(ctx, AttentionScorer, detach_embedder=ctx.config.contrastive.freeze_embedder)
    ctx.event(f"patch replacement (attention scores): proxy {loss.bank.name}, k0={loss.k0} of {loss.num_tokens} "
              f"tokens, w={loss.weight}, freeze_embedder={ctx.config.contrastive.freeze_embedder}",
              k0=loss.k0, weight=loss.weight)
    with attached(ctx, loss.modules):
        refine(ctx, loss)


def planned_steps(ctx: TrainContext) -> int:
    batches = math.ceil(len(ctx.data.train) / ctx.config.training.batch_size)
    return ctx.config.contrastive.epochs * batches
