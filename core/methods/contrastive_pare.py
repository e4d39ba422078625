"""Contrastive + patch replacement (the seed's proposal): contrastive embedder training, then PaRe.

Stage 1 (`contrastive`): only the embedder f trains. Each target batch is expanded on the fly into
K noise scales x T steps of views; z = mean-pooled f(view); the label-weighted contrastive loss of
`core.components.contrastive` pulls same-label views together. One optimizer step per batch, at 10x
the fine-tuning lr (the convention of the other embedder stages). Non-class targets get k-means
pseudo-labels (k = `alignment.pseudo_labels`), and their flattened targets serve as the label
vectors for the correlation weights.
Stage 2 (`refine`): patch replacement as in PaRe (its `pare` section), but tokens are scored by the
attention weight of a pooled query over them; `contrastive.freeze_embedder` keeps f as stage 1 left it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from core.methods import Recipe, RecipeStage, register
from core.methods.pare import PareConfig
from core.sections import Section

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from core.config import JobConfig
    from core.training.run import Run


class ContrastiveConfig(Section):
    """Stage 1 of contrastive_pare: contrastive embedder training on noise-augmented targets."""

    epochs: int = Field(3, ge=0, le=10_000)
    noise_scales: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5], min_length=1, max_length=32)
    noise_steps: int = Field(2, ge=1, le=64, description="T perturbation steps per scale")
    temperature: float = Field(0.1, gt=0, le=100, description="s = exp(cos / temperature)")
    correlation_eps: float = Field(1e-3, gt=0, le=10)
    freeze_embedder: bool = Field(False, description="keep the stage-1 embedder fixed during refinement")

    @model_validator(mode="after")
    def _check_scales(self) -> ContrastiveConfig:
        if any(not 0 < sigma < 1 for sigma in self.noise_scales):
            raise ValueError("noise_scales must lie in (0, 1) so sqrt(1 - sigma^2) is real")
        return self


def labels_and_vectors(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (classes or k-means pseudo-labels) and the label vectors their correlation is taken of."""
    import torch
    import torch.nn.functional as F

    from core.alignment import kmeans_pseudo_labels
    from core.config import TaskType

    y = run.data.train.y
    if run.spec.task == TaskType.classification:
        return y.long(), F.one_hot(y.long(), run.spec.num_classes or int(y.max()) + 1).float()
    targets = y.float().reshape(len(y), -1)
    labels = torch.from_numpy(kmeans_pseudo_labels(targets.numpy(), k=run.config.alignment.pseudo_labels,
                                                   seed=run.config.training.seed)).long()
    if targets.shape[1] < 2:  # a correlation needs vectors: use the pseudo-label's one-hot
        return labels, F.one_hot(labels).float()
    return labels, targets


def contrastive_stage(run: Run) -> None:
    import torch

    from core.components.contrastive import contrastive_loss, noise_views, pair_weights
    from core.methods.proxy_setup import proxy_for
    from core.training.optim import build_optimizer

    proxy_for(run)  # `auto` measures the target through the embedder before this stage trains it
    cfg, training, pos = run.config.contrastive, run.config.training, run.position
    labels, vectors = labels_and_vectors(run)
    embedder, train = run.model.embedder, run.data.train
    optimizer = build_optimizer(embedder.parameters(), training, 10 * training.lr)
    run.track_state("contrastive_optimizer", optimizer)
    views = len(cfg.noise_scales) * cfg.noise_steps
    batches = math.ceil(len(train) / training.batch_size)
    run.enter_stage("contrastive", f"contrastive: {cfg.epochs} epochs, {views} noise views per sample, "
                                   f"{len(labels.unique())} labels, tau={cfg.temperature}")
    embedder.train()
    while pos.stage_epoch < cfg.epochs and not run.out_of_time():
        epoch = pos.stage_epoch
        order = run.epoch_order(epoch)
        total, seen = 0.0, 0
        while pos.batch < batches and not run.out_of_time():
            index = order[pos.batch * training.batch_size:(pos.batch + 1) * training.batch_size]
            generator = run.batch_generator(epoch, pos.batch)
            x = noise_views(train.x[index].to(run.device), cfg.noise_scales, cfg.noise_steps, generator)
            view_labels, view_vectors = labels[index].repeat(views).to(run.device), vectors[index].repeat(views, 1)
            weights = pair_weights(view_labels, view_vectors.to(run.device), cfg.correlation_eps)
            with run.autocast():
                z = embedder(x)[0].float().mean(dim=1)
            loss = contrastive_loss(z, view_labels, weights, cfg.temperature)
            loss.backward()
            if training.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(embedder.parameters(), training.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total, seen = total + float(loss.detach()), seen + 1
            pos.batch += 1
            run.step_done()
        run.finish_epoch()
        metrics = {"contrastive_loss": total / seen} if seen else {}
        for key, value in metrics.items():
            run.metric(key, value, "contrastive", epoch)
        run.save_checkpoint(metrics)


def contrastive_steps(config: JobConfig, train_size: int) -> int:
    return config.contrastive.epochs * math.ceil(train_size / config.training.batch_size)


def refine_with_attention(run: Run) -> None:
    from core.components.patch_replacement import AttentionScorer
    from core.training.replacement import build_replacement_loss, refine_with_replacement

    freeze = run.config.contrastive.freeze_embedder
    loss = build_replacement_loss(run, AttentionScorer, detach_embedder=freeze)
    schedule = loss.schedule
    run.event(f"patch replacement (attention scores): proxy {loss.bank.name}, k0={schedule.k0} of "
              f"{schedule.num_tokens} tokens, w={schedule.weight}, freeze_embedder={freeze}",
              k0=schedule.k0, weight=schedule.weight)
    refine_with_replacement(run, loss)


RECIPE = register(Recipe("contrastive_pare", stages=(RecipeStage("contrastive", contrastive_stage, contrastive_steps),),
                         refine=refine_with_attention, sections={"pare": PareConfig, "contrastive": ContrastiveConfig}))
