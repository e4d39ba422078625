"""`alignment.proxy: auto`: the candidate proxy nearest the target by OTDD wins.

Candidates are the built-in proxies (WordNet, Fashion-MNIST, digits) and every labelled `.npz`
in a `proxies/` folder directly inside a deployment's model root (`<model_root>/proxies/*.npz`,
sorted by path), so an operator adds a proxy by dropping a file there. Each candidate is seen as
the alignment stage sees it: a fixed, seeded sample of `SAMPLES` proxy examples through the
body's frozen source embedding (the cached feature bank), against the target's features through
the initial embedder. One OTDD per candidate, value only. A candidate that cannot be used on this
body or whose data is missing is reported with the reason, never dropped silently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.alignment.otdd import otdd_value_only
from core.errors import ConfigError, DatasetError
from core.model_refs import check_proxy_allowed
from core.modeling.bodies import Body
from core.proxies.bank import TEXT_PROXIES, load_proxy_features

BUILT_IN = ("wordnet", "fashion-mnist", "digits")
PROXY_FOLDER = "proxies"
SAMPLES = 1000  # proxy examples per candidate (and at most this many target samples): cheap, and fixed


@dataclass(frozen=True)
class Measured:
    """One candidate: its OTDD to the target, or why it was skipped (distance None)."""

    name: str
    distance: float | None
    seconds: float
    skipped: str | None = None


def candidate_proxies(model_roots: Iterable[Path]) -> list[str]:
    """The built-in proxies, then `<root>/proxies/*.npz` of each model root (absolute, links not followed)."""
    found = [str(path) for root in model_roots for path in sorted(Path(root).absolute().glob(f"{PROXY_FOLDER}/*.npz"))]
    return [*BUILT_IN, *dict.fromkeys(found)]


def measure(name: str, body: Body, target: tuple[torch.Tensor, torch.Tensor], target_seq_len: int,
            device: torch.device, epsilon: float, inner: str, model_roots: Iterable[Path] = ()) -> Measured:
    """OTDD between `SAMPLES` examples of proxy `name` and the (features, labels) target. A file must
    lie inside a model root once links are followed, as a named proxy file must (`core.model_refs`)."""
    start = time.perf_counter()
    if name in TEXT_PROXIES and body.kind != "text":
        return Measured(name, None, 0.0, f"a text proxy; body {body.name!r} is a vision model")
    try:
        if name not in BUILT_IN:
            check_proxy_allowed(name, model_roots)
        bank = load_proxy_features(name, body, SAMPLES, target_seq_len, device)
    except (DatasetError, ConfigError) as exc:
        return Measured(name, None, time.perf_counter() - start, exc.message)
    source = (bank.features.to(device), bank.labels.to(device))
    distance = otdd_value_only(source, target, epsilon=epsilon, inner=inner)
    if not math.isfinite(distance):
        return Measured(name, None, time.perf_counter() - start, f"its OTDD to the target is {distance}")
    return Measured(name, distance, time.perf_counter() - start)


def nearest(results: list[Measured]) -> Measured:
    """The candidate with the smallest OTDD (the first listed on a tie); ConfigError when none was measured."""
    measured = [result for result in results if result.distance is not None]
    if not measured:
        reasons = "; ".join(f"{result.name}: {result.skipped}" for result in results)
        raise ConfigError(f"proxy auto found no usable proxy ({reasons}); name one explicitly",
                          field="alignment.proxy")
    return min(measured, key=lambda result: result.distance)
