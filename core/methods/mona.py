"""MoNA: meta-learn the embedder so that fine-tuning the body on the target keeps source knowledge, then refine.

Stage 1 (`meta`), `mona.iterations` optimizer steps: the target-side parameters (embedder and head)
follow ∇ [λ · L_outer(θ − α ∇_θ L_inner) + L_inner], where the body takes only a virtual step from its
pretrained weights θ (see `core.components.meta` for the objective and the three variants). The head
takes the same objective as the embedder: it shapes the inner gradient (hence the virtual step) as
much as the embedder does, and a head left at random init would make that step point nowhere in
particular. The body is never updated and runs without dropout in this stage. Stage 2: `refine`.

Each iteration draws a target batch (`training.batch_size`) and a source batch (`mona.source_batch`,
whole classes) from generators seeded by (seed, iteration), so a resumed run replays them. The
source proxy is `alignment.proxy` / `alignment.proxy_samples` (MoNA has no proxy field of its own).
The step size β is `mona.lr` (default 10x the training lr), constant, with `training.clip_grad_norm`.
"""

from __future__ import annotations

import torch

from core.components.meta import meta_gradient, sample_source_batch, source_batch
from core.components.source_tokens import load_source_tokens
from core.tasks import task_loss
from core.training.context import TrainContext
from core.training.optim import build_optimizer
from core.training.refine import refine

SOURCE_SEED_OFFSET = 7_919  # keeps the source batch stream apart from the target one
SOURCE_TEXT_TOKENS = 64  # glosses cut to this many tokens, as the ORCA proxy features are


def meta_train(ctx: TrainContext) -> None:
    cfg, training = ctx.config.mona, ctx.config.training
    pos, model, data = ctx.position, ctx.model, ctx.data
    bank = load_source_tokens(ctx.config.alignment.proxy, ctx.body, ctx.config.alignment.proxy_samples,
                              ctx.config.embedder.target_seq_len, SOURCE_TEXT_TOKENS, ctx.device)
    target_side = [*model.embedder.parameters(), *model.head.parameters()]
    for parameter in target_side:
        parameter.requires_grad_(True)
    optimizer = build_optimizer(target_side, training, cfg.lr or 10 * training.lr)
    ctx.register_optimizer("meta_optimizer", optimizer)
    parameters = dict(model.named_parameters())
    norm = data.normalisation

    def loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(ctx.spec.task, output, y, norm.y_mean, norm.y_std)

    ctx.enter_stage("meta", f"meta: {cfg.iterations} iterations, variant {cfg.variant}"
                            f"{f' (k={cfg.last_k})' if cfg.variant == 'last_k_layers' else ''}, "
                            f"alpha={cfg.inner_lr}, lambda={cfg.outer_weight}, proxy {bank.name} "
                            f"({len(bank.labels)} samples)")
    model.eval()  # no dropout: every evaluation of L_inner within an iteration sees the same function
    inner = outer = float("nan")
    while pos.stage_epoch < cfg.iterations:
        iteration = pos.stage_epoch
        generator = torch.Generator().manual_seed(training.seed * 100_003 + iteration)
        index = torch.randperm(len(data.train), generator=generator)[: training.batch_size]
        generator.manual_seed(training.seed * 100_003 + iteration + SOURCE_SEED_OFFSET)
        source_index = sample_source_batch(bank.labels, cfg.source_batch, generator)
        step = meta_gradient(model, ctx.body, data.train.x[index].to(ctx.device), data.train.y[index].to(ctx.device),
                             loss, source_batch(bank, ctx.body, source_index, ctx.device), bank.labels[source_index].to(ctx.device),
                             inner_lr=cfg.inner_lr, outer_weight=cfg.outer_weight, variant=cfg.variant,
                             last_k=cfg.last_k)
        for name, value in step.grads.items():
            parameters[name].grad = value
        if training.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(target_side, training.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        inner, outer = step.inner_loss, step.outer_loss
        pos.stage_epoch = iteration + 1
        ctx.metric("mona_inner_loss", inner, "meta", iteration)
        ctx.metric("mona_outer_loss", outer, "meta", iteration)
        ctx.step_done()
    ctx.save_checkpoint({"mona_inner_loss": inner, "mona_outer_loss": outer} if cfg.iterations else {})


def run(ctx: TrainContext) -> None:
    if ctx.config.mona.iterations and ctx.position.stage in ("setup", "meta"):
        meta_train(ctx)
    refine(ctx)


def planned_steps(ctx: TrainContext) -> int:
    return ctx.config.mona.iterations
