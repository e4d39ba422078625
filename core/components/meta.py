"""MoNA's meta-gradient: how a virtual fine-tuning step of the body, driven by the target task, changes
what the body makes of labelled source data, differentiated back to the target-side parameters.

Objective for the target-side parameters ψ = (embedder φ, head h), body at its pretrained weights θ:

    θ'(ψ) = θ − α ∇_θ L_inner(θ, ψ)                      (virtual step; θ itself never moves)
    J(ψ)  = λ · L_outer(θ'(ψ)) + L_inner(θ, ψ)
    L_outer = E_{y_i = y_j} ‖f_i − f_j‖² + log E_{i<j} exp(−2 ‖f_i − f_j‖²)

with f_i the mask-aware token mean of body_θ'(source tokens), L2-normalised (alignment and uniformity
are defined on the unit sphere; unnormalised features of width d sit so far apart that the uniformity
term is log 0 + constant and passes no gradient). Source tokens come from the body's frozen pretrained
input embedding, so L_outer reaches ψ only through θ'. Hence

    ∇_ψ J = ∇_ψ L_inner − α λ · ∂/∂ψ ⟨∇_θ L_inner(θ, ψ), v⟩,    v = ∇_θ' L_outer(θ')

and the variants differ only in how they get the mixed second-derivative term:
- `second_order`: differentiate through the inner gradient (nested `torch.func.grad`); exact. (The
  same value comes from v followed by one mixed Hessian-vector product: that ordering is not an
  approximation, only a different memory profile.)
- `first_order`: DARTS-style central finite difference of ∇_ψ L_inner at θ ± εv, ε = 0.01 / ‖v‖:
  only first derivatives (no double backward), error O(ε²). Treating ∇_θ L_inner as a constant
  (FOMAML) would leave L_outer no path to ψ at all, so that is not offered.
- `last_k_layers`: as `second_order`, but only the last k encoder layers (Swin: stages) take the
  virtual step (the rest stay at θ), so the inner gradient and its derivative stop k layers down; the
  path from there to ψ is an ordinary backward pass. A different (shorter-step) objective, not an
  estimate of the full one.
The body runs without dropout and in fp32 (no autocast) here, so every evaluation of L_inner sees the
same function and the finite difference is not swamped by rounding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.modeling.bodies import Body
from core.proxies.bank import SourceTokenBank
from core.errors import ConfigError

Params = dict[str, torch.Tensor]
VARIANTS = ("second_order", "first_order", "last_k_layers")
FINITE_DIFFERENCE_SCALE = 0.01  # ε·‖v‖, as in DARTS
_LAYER = re.compile(r"^body\.encoder\.layers?\.(\d+)\.")


# ---- source tokens ----------------------------------------------------------------------------

Source = tuple[torch.Tensor, torch.Tensor | None, tuple[int, int] | None]  # tokens, text mask, grid


def source_batch(bank: SourceTokenBank, body: Body, index: torch.Tensor, device: torch.device) -> Source:
    """Body input tokens for the chosen proxy samples; text is cut to the batch's longest gloss."""
    tokens, valid = bank.tokens(index, device)
    if body.kind == "vision":
        side = math.isqrt(tokens.shape[1])
        return tokens, None, (side, side)
    if bank.valid is None:
        return tokens, None, None
    length = int(valid.any(0).nonzero().max()) + 1
    return tokens[:, :length], valid[:, :length].long(), None


def sample_source_batch(labels: torch.Tensor, size: int, generator: torch.Generator, per_class: int = 4
                        ) -> torch.Tensor:
    """Indices of `size` samples from whole classes (`per_class` each) so that E_{y_i = y_j} has pairs."""
    classes, counts = torch.unique(labels, return_counts=True)
    eligible = classes[counts >= 2]
    if len(eligible) == 0:
        raise ConfigError("the MoNA proxy needs at least two samples of some class", field="alignment.proxy")
    per_class = max(2, min(per_class, size))
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[: max(1, size // per_class)]]
    picks = []
    for c in chosen.tolist():
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picks)


# ---- losses --------------------------------------------------------------------------------------

def alignment_uniformity(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_{i≠j, y_i = y_j} ‖f_i − f_j‖², log E_{i<j} exp(−2 ‖f_i − f_j‖²)) on L2-normalised features."""
    f = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    squared = (f.unsqueeze(0) - f.unsqueeze(1)).pow(2).sum(-1)  # (B, B); no cdist: its double backward
    upper = torch.triu(torch.ones_like(squared, dtype=torch.bool), diagonal=1)
    same = (labels.unsqueeze(0) == labels.unsqueeze(1)) & upper
    align = squared[same].mean() if same.any() else squared.new_zeros(())
    pairs = squared[upper]
    uniform = torch.logsumexp(-2 * pairs, dim=0) - np.log(len(pairs))
    return align, uniform


# ---- parameters ---------------------------------------------------------------------------------

class _SourceEncoder(nn.Module):
    """The body alone, under the model's parameter names (`body.*`), run on source tokens."""

    def __init__(self, body: Body) -> None:
        super().__init__()
        self.body = body.model
        self._wrapper = body

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None, grid: tuple[int, int] | None
                ) -> torch.Tensor:
        if mask is not None:
            hidden = self.body(inputs_embeds=tokens, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1)
        return self._wrapper.encode(tokens, grid).mean(1)


def split_parameters(model: nn.Module, variant: str, last_k: int) -> tuple[Params, Params, Params]:
    """(target-side ψ, virtual body θ_v, fixed body θ_f), all detached from the module.

    Body parameters that cannot affect `last_hidden_state` (BERT's pooler) are left out. With
    `last_k_layers`, θ_v is the last k encoder layers and whatever follows them (Swin's final norm).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown MoNA variant {variant!r}", field="mona.variant")
    named = {name: p.detach() for name, p in model.named_parameters()}
    target = {n: p for n, p in named.items() if n.startswith(("embedder.", "head."))}
    body = {n: p for n, p in named.items() if n.startswith("body.") and not n.startswith("body.pooler.")}
    if variant != "last_k_layers":
        return target, body, {}
    layers = {n: int(m.group(1)) for n in body if (m := _LAYER.match(n))}
    if not layers:
        raise ConfigError("last_k_layers needs a body with encoder.layer(s).N parameters", field="mona.variant")
    first_virtual = max(layers.values()) + 1 - last_k
    virtual = {n: p for n, p in body.items() if layers.get(n, first_virtual) >= first_virtual
               and (n in layers or not n.startswith("body.encoder."))}
    fixed = {n: p for n, p in body.items() if n not in virtual}
    return target, virtual, fixed


# ---- the meta-gradient ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MetaStep:
    grads: Params  # ∇_ψ J for the target-side parameters
    inner_loss: float
    outer_loss: float


def meta_gradient(model: nn.Module, body: Body, x: torch.Tensor, y: torch.Tensor,
                  loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  source: Source,
                  source_labels: torch.Tensor, *, inner_lr: float, outer_weight: float,
                  variant: str = "first_order", last_k: int = 2) -> MetaStep:
    """∇_ψ [λ L_outer(θ − α ∇_θ L_inner) + L_inner] at the model's current weights (see module docstring).

    `model` is the CrossModalModel (its body stays untouched); `loss(output, y)` is the task loss.
    """
    target, virtual, fixed = split_parameters(model, variant, last_k)
    encoder = _SourceEncoder(body)
    tokens, mask, grid = source

    def inner(theta: Params, psi: Params) -> torch.Tensor:
        return loss(functional_call(model, {**fixed, **theta, **psi}, (x,)), y)

    def outer(theta: Params) -> torch.Tensor:
        features = functional_call(encoder, {**fixed, **theta}, (tokens, mask, grid))
        align, uniform = alignment_uniformity(features, source_labels)
        return align + uniform

    if variant == "first_order":
        (g_theta, g_psi), inner_value = grad_and_value(inner, argnums=(0, 1))(virtual, target)
        stepped = {n: virtual[n] - inner_lr * g_theta[n] for n in virtual}
        v, outer_value = grad_and_value(outer)(stepped)
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v.values()))
        grads = dict(g_psi)
        if norm > 0 and inner_lr * outer_weight > 0:
            eps = FINITE_DIFFERENCE_SCALE / norm.item()
            plus = grad(inner, argnums=1)({n: virtual[n] + eps * v[n] for n in virtual}, target)
            minus = grad(inner, argnums=1)({n: virtual[n] - eps * v[n] for n in virtual}, target)
            scale = inner_lr * outer_weight / (2 * eps)
            grads = {n: g_psi[n] - scale * (plus[n] - minus[n]) for n in target}
        return MetaStep(grads, float(inner_value), float(outer_value))

    def objective(psi: Params) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        g_theta, inner_value = grad_and_value(inner)(virtual, psi)
        outer_value = outer({n: virtual[n] - inner_lr * g_theta[n] for n in virtual})
        return outer_weight * outer_value + inner_value, (inner_value, outer_value)

    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU/GPU attention kernels have no double backward
        grads, (inner_value, outer_value) = grad(objective, has_aux=True)(target)
    return MetaStep(grads, float(inner_value), float(outer_value))
