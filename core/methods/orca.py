"""ORCA: align the embedder to a source proxy (only f trains), then refine everything.

Alignment follows the reference: per target class c (weight = class frequency) the objective
compares the proxy's labelled features with up to `maxsamples` embedded samples of c; gradients
accumulate over classes and one optimizer step is taken per epoch, at 10x the fine-tuning lr with
step decay x0.2 at a third and two thirds of the epochs. Targets without classes get k-means
pseudo-labels. Configured by the shared `alignment` section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.methods import Recipe, RecipeStage, register

if TYPE_CHECKING:  # pragma: no cover
    from core.config import JobConfig
    from core.training.run import Run


def align(run: Run) -> None:
    import torch

    from core.alignment import build_objective
    from core.methods.proxy_setup import alignment_labels, proxy_for
    from core.proxies.bank import load_proxy_features
    from core.training.optim import build_optimizer

    cfg, training = run.config.alignment, run.config.training
    epochs = run.config.alignment_epochs
    bank = load_proxy_features(proxy_for(run), run.body, cfg.proxy_samples, run.config.embedder.target_seq_len,
                               run.device)
    objective = build_objective(cfg.objective, bank.features.to(run.device), bank.labels.to(run.device),
                                epsilon=cfg.epsilon)
    run.track_state("align_objective", objective)  # OTDD's warm-start store: exact resume
    labels = torch.from_numpy(alignment_labels(run))
    classes, counts = torch.unique(labels, return_counts=True)
    weights = counts.double() / counts.sum()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    embedder = run.model.embedder
    optimizer = build_optimizer(embedder.parameters(), training, cfg.lr or 10 * training.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, epochs // 3), max(1, 2 * epochs // 3)], 0.2)
    run.track_state("align_optimizer", optimizer)
    run.track_state("align_scheduler", scheduler)
    run.enter_stage("align", f"align: {cfg.objective} to proxy {bank.name} ({len(bank.labels)} samples), "
                             f"{epochs} epochs over {len(classes)} target classes")
    embedder.train()
    total = float("nan")  # stays so only when a resumed run finds every epoch done
    while run.position.stage_epoch < epochs and not run.out_of_time():
        epoch = run.position.stage_epoch
        generator = run.epoch_generator(epoch)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for weight, index in zip(weights.tolist(), members):
            chosen = index[torch.randperm(len(index), generator=generator)[: cfg.maxsamples]]
            tokens, _ = embedder(run.data.train.x[chosen].to(run.device))
            loss = weight * objective(tokens.float().mean(dim=1), torch.zeros(len(chosen), dtype=torch.long,
                                                                              device=run.device))
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        scheduler.step()
        run.finish_epoch()
        run.metric(cfg.objective, total, "align", epoch)
        run.step_done()
    run.save_checkpoint({cfg.objective: total} if epochs else {})


def align_steps(config: JobConfig, train_size: int) -> int:
    return config.alignment_epochs


RECIPE = register(Recipe("orca", stages=(RecipeStage("align", align, align_steps),)))
