"""PaRe: fine-tune on the task while gradually replacing target tokens with source-proxy tokens.

One stage (`refine`) with the patch-replacement loss: a shared linear gate scores source and target
tokens; the k worst target tokens are swapped for the k best source tokens, k decaying linearly
from k0 to 0; a source head h_s classifies the proxy label of the mixed sequence. The source tokens
come from the body's frozen pretrained embedding over `alignment.proxy` (not matched to target
classes). Dense tasks use the same source objective as the reference: h_s on the mean-pooled body
output predicts the proxy's class. Details in `core.components.patch_replacement`.
"""

from __future__ import annotations

from core.components.patch_replacement import LinearGate, attached, build_replacement_loss
from core.training.context import TrainContext
from core.training.refine import refine


def run(ctx: TrainContext) -> None:
    loss = build_replacement_loss(ctx, LinearGate)
    cfg = ctx.config.pare
    ctx.event(f"patch replacement: proxy {loss.bank.name} ({len(loss.bank)} samples, {loss.bank.num_classes} classes), "
              f"k0={loss.k0} of {loss.num_tokens} tokens, w={loss.weight}, lambda={cfg.lambda_rule}, "
              f"Gumbel top-k for {cfg.gumbel_epochs} epoch(s)", k0=loss.k0, weight=loss.weight)
    with attached(ctx, loss.modules):
        refine(ctx, loss)


def planned_steps(ctx: TrainContext) -> int:
    return 0
