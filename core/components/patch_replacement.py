"""Patch replacement (PaRe): mix high-scoring source tokens into target sequences, on a decaying schedule.

Pieces the `pare` and `contrastive_pare` recipes share:
- scorers: `LinearGate` (PaRe: Linear(d -> 1) + sigmoid, shared by source and target tokens) and
  `AttentionScorer` (contrastive_pare: attention weights of a pooled query over the tokens);
- `replace_tokens`: keep the N - k best-scored target tokens, put the k best source tokens into the
  k worst target slots;
- the schedule k = k0 (1 - done), lambda = k / k0 (or k / N), and the reference weights w, where
  `done` is the share of the refine stage's optimizer steps taken (or, as before, epoch / epochs);
- `PatchReplacementLoss`, the refine-stage loss
  L = L_tar(clean) + w [(1 - lambda) L_tar(mixed, y_t) + lambda L_src(h_s(mixed), y_s)].

Positions: the i-th replaced target slot (in position order) receives the i-th selected source token
(in its own position order), so source tokens keep their relative order. A source token carries the
positional information its pretrained embedding gave it; the slot it lands in adds nothing, because
target tokens already have their positions added inside the embedder.

Selection: plain top-k when not learning the scorer. While learning (the Gumbel phase), the
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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TaskType
from core.modeling.heads import DENSE_TASKS
from core.modeling.model import CrossModalModel
from core.modeling.tasks import task_loss
from core.proxies.bank import LoopingLoader, SourceTokenBank
from core.training.streams import batch_generator

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
def replaced_count(k0: int, done: float) -> int:
    """k = floor(k0 (1 - done)): linear decay from k0 to 0 over the schedule (`done` in [0, 1])."""
    return int(k0 * (1 - min(1.0, done)))


def mix_lambda(k: int, k0: int, num_tokens: int, rule: str) -> float:
    """lambda = k / k0 (paper) or k / N (reference code)."""
    denominator = num_tokens if rule == "k_over_n" else k0
    return k / denominator if denominator else 0.0


def default_weight(task: TaskType, input_ndim: int) -> float:
    """The reference's w: 0.3 dense, 1.0 other 2D tasks, 0.1 other 1D tasks."""
    if task in DENSE_TASKS:
        return 0.3
    return 1.0 if input_ndim == 3 else 0.1


def gumbel_share(gumbel_epochs: int, run_epochs: float, max_share: float) -> float:
    """The share of the run spent in the Gumbel phase: `gumbel_epochs` of the run's `run_epochs`, at most
    `max_share` of it, so a short run still gets a plain top-k phase."""
    return min(max_share, gumbel_epochs / run_epochs) if run_epochs > 0 else 0.0


@dataclass(frozen=True)
class ReplacementSchedule:
    """k, lambda and the Gumbel phase as the run advances, with the weight w of the mixed terms.

    `epochs` None: the schedule follows the refine stage's progress (its share of optimizer steps done),
    whatever bounds the stage. An int: it follows epoch / epochs instead (the old rule: under
    `max_steps` with many nominal epochs k never decays).
    """

    k0: int
    num_tokens: int
    weight: float
    lambda_rule: str
    gumbel_until: float  # share of the schedule spent in the Gumbel phase
    tau: float
    epochs: int | None = None

    def done(self, epoch: int, progress: float) -> float:
        if self.epochs is None:
            return progress
        return epoch / self.epochs if self.epochs else 1.0

    def at(self, done: float) -> tuple[int, float]:
        k = replaced_count(self.k0, done)
        return k, mix_lambda(k, self.k0, self.num_tokens, self.lambda_rule)

    def gumbel(self, done: float) -> bool:
        return done < self.gumbel_until


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
    """`loss(model, x, y, epoch, batch, progress)` for `refine`: clean task loss + w x the mixed terms."""

    modules: ReplacementModules
    bank: SourceTokenBank
    loader: LoopingLoader
    schedule: ReplacementSchedule
    task: TaskType
    y_mean: float
    y_std: float
    batch_size: int
    seed: int
    detach_embedder: bool = False  # contrastive.freeze_embedder: the embedder gets no gradient

    def __call__(self, model: CrossModalModel, x: torch.Tensor, y: torch.Tensor, epoch: int,
                 batch: int, progress: float) -> torch.Tensor:
        done = self.schedule.done(epoch, progress)
        k, lam = self.schedule.at(done)
        tokens, grid = model.embed(x)
        if self.detach_embedder:
            tokens = tokens.detach()
        loss = task_loss(self.task, model.forward_tokens(tokens, grid), y, self.y_mean, self.y_std)
        if k == 0 or self.schedule.weight == 0:
            return loss
        index = self.loader.indices(epoch, batch, self.batch_size, len(x))
        source, valid = self.bank.tokens(index, x.device)
        tau = self.schedule.tau if self.schedule.gumbel(done) else None
        scorer = self.modules.scorer
        mixed, _ = replace_tokens(tokens, source, scorer(tokens), scorer(source, valid), k, source_valid=valid,
                                  tau=tau, generator=batch_generator(self.seed, epoch, batch))
        hidden = model.encode(mixed, grid)
        target_term = task_loss(self.task, model.head(hidden, grid), y, self.y_mean, self.y_std)
        source_logits = self.modules.source_head(hidden.float().mean(dim=1))
        source_term = F.cross_entropy(source_logits, self.bank.labels[index].to(x.device))
        return loss + self.schedule.weight * ((1 - lam) * target_term + lam * source_term)
