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

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from core.methods import Recipe, RecipeStage, register
from core.sections import Section

if TYPE_CHECKING:  # pragma: no cover
    from core.config import JobConfig
    from core.training.run import Run

SOURCE_SEED_OFFSET = 7_919  # keeps the source batch stream apart from the target one


class MonaConfig(Section):
    """MoNA stage 1: meta-learned embedder."""

    iterations: int = Field(20, ge=0, le=100_000, description="stage-1 outer iterations")
    inner_lr: float = Field(1e-3, gt=0, le=10, description="alpha of the virtual body step")
    outer_weight: float = Field(1.0, ge=0, le=100, description="lambda on the outer (align + uniformity) loss")
    lr: float | None = Field(None, gt=0, le=10, description="beta for the embedder; default 10x training lr")
    variant: Literal["second_order", "first_order", "last_k_layers"] = Field(
        "second_order", description="second_order is exact and, measured, faster than the finite-difference "
                                    "first_order (bench/results/mona_cost.md); first_order needs ~3x less memory")
    last_k: int = Field(2, ge=1, le=1000, description="layers differentiated through with last_k_layers")
    source_batch: int = Field(32, ge=2, le=4096)


def meta_train(run: Run) -> None:
    import torch

    from core.components.meta import meta_gradient, sample_source_batch, source_batch
    from core.modeling.tasks import task_loss
    from core.methods.proxy_setup import proxy_for
    from core.proxies.bank import FEATURE_TOKENS, load_source_tokens
    from core.training.optim import build_optimizer

    cfg, training = run.config.mona, run.config.training
    pos, model, data = run.position, run.model, run.data
    bank = load_source_tokens(proxy_for(run), run.body, run.config.alignment.proxy_samples,
                              run.config.embedder.target_seq_len, FEATURE_TOKENS, run.device)
    target_side = [*model.embedder.parameters(), *model.head.parameters()]
    for parameter in target_side:
        parameter.requires_grad_(True)
    optimizer = build_optimizer(target_side, training, cfg.lr or 10 * training.lr)
    run.track_state("meta_optimizer", optimizer)
    parameters = dict(model.named_parameters())
    norm = data.normalisation

    def loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(run.spec.task, output, y, norm.y_mean, norm.y_std)

    run.enter_stage("meta", f"meta: {cfg.iterations} iterations, variant {cfg.variant}"
                            f"{f' (k={cfg.last_k})' if cfg.variant == 'last_k_layers' else ''}, "
                            f"alpha={cfg.inner_lr}, lambda={cfg.outer_weight}, proxy {bank.name} "
                            f"({len(bank.labels)} samples)")
    model.eval()  # no dropout: every evaluation of L_inner within an iteration sees the same function
    inner = outer = float("nan")
    while pos.stage_epoch < cfg.iterations and not run.out_of_time():
        iteration = pos.stage_epoch
        index = torch.randperm(len(data.train), generator=run.epoch_generator(iteration))[: training.batch_size]
        source_index = sample_source_batch(bank.labels, cfg.source_batch,
                                           run.epoch_generator(iteration, offset=SOURCE_SEED_OFFSET))
        step = meta_gradient(model, run.body, data.train.x[index].to(run.device), data.train.y[index].to(run.device),
                             loss, source_batch(bank, run.body, source_index, run.device),
                             bank.labels[source_index].to(run.device), inner_lr=cfg.inner_lr,
                             outer_weight=cfg.outer_weight, variant=cfg.variant, last_k=cfg.last_k)
        for name, value in step.grads.items():
            parameters[name].grad = value
        if training.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(target_side, training.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        inner, outer = step.inner_loss, step.outer_loss
        run.finish_epoch()
        run.metric("mona_inner_loss", inner, "meta", iteration)
        run.metric("mona_outer_loss", outer, "meta", iteration)
        run.step_done()
    run.save_checkpoint({"mona_inner_loss": inner, "mona_outer_loss": outer} if cfg.iterations else {})


def meta_steps(config: JobConfig, train_size: int) -> int:
    return config.mona.iterations


RECIPE = register(Recipe("mona", stages=(RecipeStage("meta", meta_train, meta_steps),), sections={"mona": MonaConfig}))
