"""Patch replacement (PaRe): mix high-scoring source tokens into target sequences, on a decaying schedule.

Pieces the `pare` and `contrastive_pare` recipes share:
- scorers: `LinearGate` (PaRe: Linear(d -> 1) + sigmoid, shared by source and target tokens) and
  `AttentionScorer` (contrastive_pare: attention weights of a pooled query over the tokens);
- `replace_tokens`: keep the N - k best-scored target tokens, put the k best source tokens into the
  k worst target slots;
- the schedule k = k0 (1 - epoch / epochs), lambda = k / k0 (or k / N), and the reference weights w;
- `PatchReplacementLoss`, the refine-stage loss
  L = L_tar(clean) + w [(1 - lambda) L_tar(mixed, y_t) + lambda L_src(h_s(mixed), y_s)].

Positions: the i-th replaced target slot (in position order) receives the i-th selected source token
(in its own position order), so source tokens keep their relative order. A source token carries the
positional information its pretrained embedding gave it; the slot it lands in adds nothing, because
target tokens already have their positions added inside the embedder.

Selection: plain top-k when not learning the scorer. While learning (the first `gumbel_epochs`), the
Gumbel top-k trick on log-scores (a sample of k tokens without replacement, proportional to the
score) with a straight-through mask: forward values are exactly the hard 0/1 selection, gradients
come from sigmoid((perturbed - threshold) / tau), the threshold midway between the k-th and
(k+1)-th perturbed scores. This O(N log N) relaxation replaces the reference's k successive
softmaxes (O(kN)), which is too slow for Swin's 3136 tokens. Selected tokens are multiplied by this
mask, which is how the scorer gets gradients (as in the reference); after the Gumbel phase the
scorer gets none.

At k = 0 the mixed terms are skipped (the reference would add the clean loss a second time).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.components.source_tokens import LoopingLoader, SourceTokenBank, load_source_tokens
from core.config import PareConfig, TaskType
from core.heads import DENSE_TASKS
from core.tasks import task_loss
from core.training.context import TrainContext

MASKED = -1e4  # added to the log-score of padding so it ranks below every real token


# ---- scorers ------------------------------------------------------------------------------------
class LinearGate(nn.Module):
    """PaRe's gate: one shared Linear(d -> 1) + sigmoid score per token."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.linear(tokens.float())).squeeze(-1)


class AttentionScorer(nn.Module):
    """Attention weight of a pooled query over the tokens: softmax_i(q(mean x) . k(x_i) / sqrt(d))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        tokens = tokens.float()
        if valid is None:
            pooled = tokens.mean(dim=1)
        else:
            weights = valid.unsqueeze(-1).float()
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        logits = torch.einsum("bd,bnd->bn", self.query(pooled), self.key(tokens)) / math.sqrt(tokens.shape[-1])
        if valid is not None:
            logits = logits.masked_fill(~valid, float("-inf"))
        return torch.softmax(logits, dim=-1)


class ReplacementModules(nn.Module):
    """What the recipe trains besides the model: the scorer and the source head h_s."""

    def __init__(self, scorer: nn.Module, width: int, source_classes: int) -> None:
        super().__init__()
        self.scorer = scorer
        self.source_head = nn.Linear(width, source_classes)


# ---- schedule -----------------------------------------------------------------------------------
def replaced_count(k0: int, epoch: int, epochs: int) -> int:
    """k = floor(k0 (1 - epoch / epochs)): linear decay from k0 to 0."""
    return int(k0 * (1 - epoch / epochs)) if epochs else 0


def mix_lambda(k: int, k0: int, num_tokens: int, rule: str) -> float:
    """lambda = k / k0 (paper) or k / N (reference code)."""
    denominator = num_tokens if rule == "k_over_n" else k0
    return k / denominator if denominator else 0.0


def default_weight(task: TaskType, input_ndim: int) -> float:
    """The reference's w: 0.3 dense, 1.0 other 2D tasks, 0.1 other 1D tasks."""
    if task in DENSE_TASKS:
        return 0.3
    return 1.0 if input_ndim == 3 else 0.1


# ---- selection and mixing -------------------------------------------------------------------------
def _select(scores: torch.Tensor, k: int, largest: bool, valid: torch.Tensor | None, tau: float | None,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices (B, k) of the k largest (or smallest) scores, sorted by position, and, when `tau` is
    given, a straight-through (B, N) mask of the selection built on Gumbel-perturbed log-scores."""
    logits = scores.float().clamp_min(1e-12).log()
    if valid is not None:
        logits = logits + MASKED * (~valid).float() * (1 if largest else -1)
    if tau is not None:
        uniform = torch.rand(scores.shape, generator=generator).clamp(1e-10, 1 - 1e-10).to(scores.device)
        logits = logits - torch.log(-torch.log(uniform))
    signed = logits if largest else -logits
    ranked = torch.topk(signed, min(k + 1, signed.shape[1]), dim=1).values
    index = torch.topk(signed, k, dim=1).indices.sort(dim=1).values
    if tau is None:
        return index, None
    kth = ranked[:, k - 1]
    after = ranked[:, k] if ranked.shape[1] > k else kth - 1.0
    threshold = ((kth + after) / 2).detach().unsqueeze(1)
    soft = torch.sigmoid((signed - threshold) / tau)
    hard = torch.zeros_like(soft).scatter(1, index, 1.0)
    return index, hard + (soft - soft.detach())  # forward: exactly `hard`


def replace_tokens(target: torch.Tensor, source: torch.Tensor, target_scores: torch.Tensor,
                   source_scores: torch.Tensor, k: int, source_valid: torch.Tensor | None = None,
                   tau: float | None = None, generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed sequence (B, N, d) and the replaced target positions (B, k).

    The k lowest-scored target tokens are replaced by the k highest-scored source tokens; `tau`
    switches on the differentiable Gumbel selection.
    """
    if k == 0:
        return target, torch.zeros(target.shape[0], 0, dtype=torch.long, device=target.device)
    replaced, replaced_mask = _select(target_scores, k, largest=False, valid=None, tau=tau, generator=generator)
    chosen, chosen_mask = _select(source_scores, k, largest=True, valid=source_valid, tau=tau, generator=generator)
    source = source.to(target.dtype)
    if replaced_mask is not None and chosen_mask is not None:
        target = target * (1 - replaced_mask).unsqueeze(-1).to(target.dtype)
        source = source * chosen_mask.unsqueeze(-1).to(target.dtype)
    width = target.shape[-1]
    picked = source.gather(1, chosen.unsqueeze(-1).expand(-1, -1, width))
    return target.scatter(1, replaced.unsqueeze(-1).expand(-1, -1, width), picked), replaced


# ---- the refine-stage loss ------------------------------------------------------------------------
@dataclass
class PatchReplacementLoss:
    """`loss_fn(ctx, x, y, epoch)` for `refine`: clean task loss + w x the mixed terms."""

    modules: ReplacementModules
    bank: SourceTokenBank
    loader: LoopingLoader
    config: PareConfig
    k0: int
    weight: float
    num_tokens: int
    detach_embedder: bool = False  # contrastive.freeze_embedder: the embedder gets no gradient

    def schedule(self, epoch: int, epochs: int) -> tuple[int, float]:
        k = replaced_count(self.k0, epoch, epochs)
        return k, mix_lambda(k, self.k0, self.num_tokens, self.config.lambda_rule)

    def __call__(self, ctx: TrainContext, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        norm, task = ctx.data.normalisation, ctx.spec.task
        batch = ctx.position.batch
        k, lam = self.schedule(epoch, ctx.config.training.epochs)
        gumbel = epoch < self.config.gumbel_epochs
        if batch == 0:
            self._report(ctx, epoch, k, lam, gumbel)
        tokens, grid = ctx.model.embed(x)
        if self.detach_embedder:
            tokens = tokens.detach()
        loss = task_loss(task, ctx.model.forward_tokens(tokens, grid), y, norm.y_mean, norm.y_std)
        if k == 0 or self.weight == 0:
            return loss
        index = self.loader.indices(epoch, batch, ctx.config.training.batch_size, len(x))
        source, valid = self.bank.tokens(index, ctx.device)
        generator = torch.Generator().manual_seed(ctx.config.training.seed * 1_000_003 + epoch * 10_007 + batch)
        scorer = self.modules.scorer
        mixed, _ = replace_tokens(tokens, source, scorer(tokens), scorer(source, valid), k, source_valid=valid,
                                  tau=self.config.tau if gumbel else None, generator=generator)
        hidden = ctx.body.encode(mixed, grid)
        target_term = task_loss(task, ctx.model.head(hidden, grid), y, norm.y_mean, norm.y_std)
        source_logits = self.modules.source_head(hidden.float().mean(dim=1))
        source_term = F.cross_entropy(source_logits, self.bank.labels[index].to(ctx.device))
        return loss + self.weight * ((1 - lam) * target_term + lam * source_term)

    def _report(self, ctx: TrainContext, epoch: int, k: int, lam: float, gumbel: bool) -> None:
        ctx.metric("pare_k", k, "train", epoch)
        ctx.metric("pare_lambda", lam, "train", epoch)
        if epoch == self.config.gumbel_epochs and epoch > 0:
            ctx.event(f"patch replacement: plain top-k from epoch {epoch} (scorer no longer trained)",
                      pare_gumbel=False)
        if k == 0 and (epoch == 0 or replaced_count(self.k0, epoch - 1, ctx.config.training.epochs) > 0):
            ctx.event(f"patch replacement: k reached 0 at epoch {epoch}; clean task loss only", pare_k=0)


# ---- set-up shared by the recipes -----------------------------------------------------------------
def target_token_count(ctx: TrainContext) -> int:
    with torch.no_grad():
        tokens, _ = ctx.model.embed(ctx.data.train.x[:1].to(ctx.device))
    return tokens.shape[1]


def build_replacement_loss(ctx: TrainContext, scorer: type[nn.Module], detach_embedder: bool = False,
                           ) -> PatchReplacementLoss:
    """Source token bank (the `alignment.proxy`), scorer, source head, k0 and w for this run."""
    cfg, proxy, training = ctx.config.pare, ctx.config.alignment, ctx.config.training
    num_tokens = target_token_count(ctx)
    bank = load_source_tokens(proxy.proxy, ctx.body, proxy.proxy_samples, ctx.config.embedder.target_seq_len,
                              num_tokens, ctx.device)
    source_tokens = bank.tokens(torch.zeros(1, dtype=torch.long), ctx.device)[0].shape[1]
    k0 = min(num_tokens // 2 if cfg.k0 is None else cfg.k0, num_tokens, source_tokens)
    with torch.random.fork_rng():  # the new modules' init must not depend on (or shift) the run's RNG
        torch.manual_seed(training.seed)
        modules = ReplacementModules(scorer(ctx.body.width), ctx.body.output_width, bank.num_classes)
    weight = default_weight(ctx.spec.task, len(ctx.spec.input_shape)) if cfg.weight is None else cfg.weight
    return PatchReplacementLoss(modules.to(ctx.device), bank, LoopingLoader(len(bank), training.seed), cfg, k0,
                                weight, num_tokens, detach_embedder)


@contextmanager
def attached(ctx: TrainContext, modules: nn.Module, name: str = "patch_replacement") -> Iterator[None]:
    """Make `modules` part of the model for the refine stage, but not of its saved weights.

    As a submodule, refine's optimizer, grad clipping and train/eval switches cover them; a
    state-dict hook keeps them out of model.safetensors (so `predict` never sees them); their
    weights travel in the trainer state instead (`register_optimizer` takes anything with a
    state_dict), which restores them on resume.
    """
    ctx.register_optimizer(f"{name}_modules", modules)
    ctx.model.add_module(name, modules)
    prefix = f"{name}."

    def drop(module: nn.Module, state: dict, _prefix: str, _metadata: object) -> None:
        for key in [key for key in state if key.startswith(_prefix + prefix)]:
            del state[key]

    handle = ctx.model.register_state_dict_post_hook(drop)
    try:
        yield
    finally:
        handle.remove()
        delattr(ctx.model, name)
