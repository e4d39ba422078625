"""PaRe: fine-tune on the task while gradually replacing target tokens with source-proxy tokens.

One stage (`refine`) with the patch-replacement loss: a shared linear gate scores source and target
tokens; the k worst target tokens are swapped for the k best source tokens, k decaying linearly
from k0 to 0; a source head h_s classifies the proxy label of the mixed sequence. The source tokens
come from the body's frozen pretrained embedding over `alignment.proxy` (not matched to target
classes). Dense tasks use the same source objective as the reference: h_s on the mean-pooled body
output predicts the proxy's class. Details in `core.components.patch_replacement`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from core.methods import Recipe, register
from core.sections import Section

if TYPE_CHECKING:  # pragma: no cover
    from core.training.run import Run


class PareConfig(Section):
    """Patch replacement (PaRe, and stage 2 of contrastive_pare)."""

    k0: int | None = Field(None, ge=0, le=4096, description="tokens replaced at epoch 0; None: half the tokens")
    weight: float | None = Field(None, ge=0, le=100,
                                 description="w on the mixed terms; None: reference 1.0 (2D cls), 0.1 (1D), 0.3 (dense)")
    lambda_rule: Literal["k_over_k0", "k_over_n"] = Field("k_over_k0", description="paper k/k0; reference k/N")
    schedule: Literal["progress", "epochs"] = Field(
        "progress", description="what k and the Gumbel phase follow: progress = the refine stage's optimizer "
                                "steps, however bounded (epochs, max_steps); epochs = epoch / training.epochs "
                                "(old: never decays under max_steps)")
    gumbel_epochs: int = Field(5, ge=0, le=10_000, description="epochs of differentiable Gumbel top-k (reference: 5)")
    gumbel_max_share: float = Field(1 / 3, ge=0, le=1,
                                    description="progress schedule: the Gumbel phase takes at most this share "
                                                "of a short run (reference: 5 of 15 epochs for ECG, of 60 for "
                                                "CIFAR-100)")
    tau: float = Field(0.9, gt=0, le=100, description="Gumbel temperature")


def refine_with_gate(run: Run) -> None:
    from core.components.patch_replacement import LinearGate
    from core.training.replacement import build_replacement_loss, refine_with_replacement

    loss = build_replacement_loss(run, LinearGate)
    cfg, schedule = run.config.pare, loss.schedule
    run.event(f"patch replacement: proxy {loss.bank.name} ({len(loss.bank)} samples, {loss.bank.num_classes} "
              f"classes), k0={schedule.k0} of {schedule.num_tokens} tokens, w={schedule.weight}, "
              f"lambda={cfg.lambda_rule}, Gumbel top-k for the first {schedule.gumbel_until:.0%} of the "
              f"{cfg.schedule} schedule",
              k0=schedule.k0, weight=schedule.weight)
    refine_with_replacement(run, loss)


RECIPE = register(Recipe("pare", refine=refine_with_gate, sections={"pare": PareConfig}))
