"""Refining with patch replacement, shared by the `pare` and `contrastive_pare` recipes: build the
loss for this run, attach its modules to the model for the stage, report its schedule every epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.components.patch_replacement import (PatchReplacementLoss, ReplacementModules, ReplacementSchedule,
                                               default_weight, gumbel_share)
from core.methods.proxy_setup import proxy_for
from core.proxies.bank import LoopingLoader, load_source_tokens
from core.training.refine import budget_of, refine
from core.training.run import Run


def target_token_count(run: Run) -> int:
    with torch.no_grad():
        tokens, _ = run.model.embed(run.data.train.x[:1].to(run.device))
    return tokens.shape[1]


def _gumbel_until(run: Run) -> float:
    """The Gumbel phase's share of the schedule: `gumbel_epochs` of the epochs the stage really runs
    (capped), or, on the old epoch schedule, of `training.epochs`."""
    cfg, budget = run.config.pare, budget_of(run)
    if cfg.schedule == "epochs":
        return cfg.gumbel_epochs / budget.epochs if budget.epochs else 0.0
    return gumbel_share(cfg.gumbel_epochs, budget.steps / budget.steps_per_epoch, cfg.gumbel_max_share)


def build_replacement_loss(run: Run, scorer: type[nn.Module], detach_embedder: bool = False,
                           ) -> PatchReplacementLoss:
    """Source token bank (the `alignment.proxy`), scorer, source head, k0 and w for this run."""
    cfg, proxy, training = run.config.pare, run.config.alignment, run.config.training
    num_tokens = target_token_count(run)
    bank = load_source_tokens(proxy_for(run), run.body, proxy.proxy_samples, run.config.embedder.target_seq_len,
                              num_tokens, run.device)
    source_tokens = bank.tokens(torch.zeros(1, dtype=torch.long), run.device)[0].shape[1]
    k0 = min(num_tokens // 2 if cfg.k0 is None else cfg.k0, num_tokens, source_tokens)
    with torch.random.fork_rng():  # the new modules' init must not depend on (or shift) the run's RNG
        torch.manual_seed(training.seed)
        modules = ReplacementModules(scorer(run.body.width), run.body.output_width, bank.num_classes)
    weight = default_weight(run.spec.task, len(run.spec.input_shape)) if cfg.weight is None else cfg.weight
    schedule = ReplacementSchedule(k0, num_tokens, weight, cfg.lambda_rule, _gumbel_until(run), cfg.tau,
                                   budget_of(run).epochs if cfg.schedule == "epochs" else None)
    norm = run.data.normalisation
    return PatchReplacementLoss(modules.to(run.device), bank, LoopingLoader(len(bank), training.seed), schedule,
                                run.spec.task, norm.y_mean, norm.y_std, training.batch_size, training.seed,
                                detach_embedder)


def report_schedule(loss: PatchReplacementLoss) -> Callable[[Run, int, float], None]:
    """refine's epoch-start hook: k and lambda as metrics, and an event when the Gumbel phase or k ends."""
    schedule = loss.schedule
    last: dict[str, float] = {}  # the previous call's schedule position (none yet after a resume)

    def report(run: Run, epoch: int, progress: float) -> None:
        done = schedule.done(epoch, progress)
        k, lam = schedule.at(done)
        run.metric("pare_k", k, "train", epoch)
        run.metric("pare_lambda", lam, "train", epoch)
        before = last.get("done")
        if before is not None and schedule.gumbel(before) and not schedule.gumbel(done):
            run.event(f"patch replacement: plain top-k from epoch {epoch} (scorer no longer trained)",
                      pare_gumbel=False)
        if k == 0 and (done == 0 or (before is not None and schedule.at(before)[0] > 0)):
            run.event(f"patch replacement: k reached 0 at epoch {epoch}; clean task loss only", pare_k=0)
        last["done"] = done

    return report


@contextmanager
def attached(run: Run, modules: nn.Module, name: str = "patch_replacement") -> Iterator[None]:
    """Make `modules` part of the model for the refine stage, but not of its saved weights.

    As a submodule, refine's optimizer, grad clipping and train/eval switches cover them; a
    state-dict hook keeps them out of model.safetensors (so `predict` never sees them); their
    weights travel in the trainer state instead (`track_state`), which restores them on resume.
    """
    run.track_state(f"{name}_modules", modules)
    run.model.add_module(name, modules)
    prefix = f"{name}."

    def drop(module: nn.Module, state: dict, _prefix: str, _metadata: object) -> None:
        for key in [key for key in state if key.startswith(_prefix + prefix)]:
            del state[key]

    handle = run.model.register_state_dict_post_hook(drop)
    try:
        yield
    finally:
        handle.remove()
        delattr(run.model, name)


def refine_with_replacement(run: Run, loss: PatchReplacementLoss) -> None:
    with attached(run, loss.modules):
        refine(run, loss, on_epoch_start=report_schedule(loss))
