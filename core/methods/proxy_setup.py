"""The recipes' source proxy: `alignment.proxy` as named, or with `auto` the candidate nearest the target.

Every recipe that uses a proxy (orca, pare, mona, contrastive_pare) asks `proxy_for(run)`. With
`auto` the choice is measured once, at the first stage that needs it and so before any training has
moved the embedder; every distance and the choice are events. The choice is checkpoint state: a
resumed run reads it back instead of measuring a trained embedder.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from core.training.run import Run

CHOICE_STATE = "proxy_choice"
TARGET_BATCH = 256


class ProxyChoice:
    """The proxy `auto` chose, kept in checkpoints ('' until chosen)."""

    def __init__(self) -> None:
        self.name = ""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.name = str(state["name"])


def alignment_labels(run: Run) -> np.ndarray:
    """Class labels, or k-means pseudo-labels on the targets of non-class tasks."""
    from core.alignment import kmeans_pseudo_labels
    from core.config import TaskType

    y = run.data.train.y.numpy()
    if run.spec.task == TaskType.classification:
        return y
    return kmeans_pseudo_labels(y.reshape(len(y), -1), k=run.config.alignment.pseudo_labels,
                                seed=run.config.training.seed)


def proxy_for(run: Run) -> str:
    """The proxy name the run's recipes load: the configured one, or `auto`'s measured choice."""
    from core.proxies.bank import resolve_proxy_name

    if run.config.alignment.proxy != "auto":
        return resolve_proxy_name(run.config.alignment.proxy, run.body)
    choice = run.tracked.get(CHOICE_STATE)
    if choice is None:
        choice = ProxyChoice()
        run.track_state(CHOICE_STATE, choice)  # a resumed run gets its recorded choice back here
        if choice.name:
            run.event(f"proxy auto: {choice.name}, as chosen before the resume", proxy=choice.name)
    if not choice.name:
        choice.name = choose(run)
    return choice.name


def choose(run: Run) -> str:
    """Measure every candidate's OTDD to the target; report each and the nearest, which is returned."""
    from core.proxies import choice

    cfg = run.config.alignment
    start = time.perf_counter()
    target = target_features(run, choice.SAMPLES)
    inner = "gaussian" if cfg.objective == "otdd_gaussian" else "exact"
    results = []
    for name in choice.candidate_proxies(run.model_roots):
        result = choice.measure(name, run.body, target, run.config.embedder.target_seq_len, run.device,
                                cfg.epsilon, inner, run.model_roots)
        if result.distance is None:
            run.event(f"proxy auto: {name} skipped: {result.skipped}", level="warning", proxy_candidate=name,
                      skipped=result.skipped)
        else:
            run.event(f"proxy auto: OTDD to {name} = {result.distance:.4g} ({result.seconds:.1f} s)",
                      proxy_candidate=name, otdd=result.distance, seconds=result.seconds)
        results.append(result)
    best = choice.nearest(results)
    seconds = time.perf_counter() - start
    distances = {result.name: result.distance for result in results if result.distance is not None}
    run.event(f"proxy auto: chose {best.name} (OTDD {best.distance:.4g}, the smallest of {len(distances)}) "
              f"in {seconds:.1f} s", proxy=best.name, otdd=best.distance, distances=distances, seconds=seconds)
    return best.name


def target_features(run: Run, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed class-balanced sample of the training targets through the embedder as it is now, token-mean
    pooled as ORCA's alignment pools them, with their (pseudo-)labels. Leaves the RNG and modes untouched."""
    import torch

    from core.proxies.bank import PROXY_SEED
    from core.proxies.sources import balanced_indices

    labels = alignment_labels(run)
    index = torch.from_numpy(balanced_indices(labels, samples, PROXY_SEED))
    embedder = run.model.embedder
    was_training = embedder.training
    embedder.eval()
    try:
        with torch.no_grad():
            features = [embedder(run.data.train.x[chunk].to(run.device))[0].float().mean(dim=1)
                        for chunk in torch.split(index, TARGET_BATCH)]
    finally:
        embedder.train(was_training)
    return torch.cat(features), torch.from_numpy(labels[index.numpy()]).long().to(run.device)
