"""Every random stream of a run, derived in one place from the seed, the epoch and the batch.

A stream depends on nothing but these numbers, so a resumed run replays it exactly. Two families,
unchanged since the first version so that a seed gives the runs it always gave:
- per epoch: seed * 100_003 + epoch (+ an offset that keeps a second stream of the epoch apart);
  batch order of an epoch, ORCA's per-class samples, MoNA's batches;
- per batch: seed * 1_000_003 + epoch * 10_007 + batch; noise views, Gumbel noise, source batches.
The stage is not mixed in: each stage uses its own family or offset.
"""

from __future__ import annotations

import torch

SEED_LIMIT = 2**63 - 1


def epoch_generator(seed: int, epoch: int, offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 100_003 + epoch + offset) % SEED_LIMIT)


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + batch) % SEED_LIMIT)


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The batch order of an epoch."""
    return torch.randperm(size, generator=epoch_generator(seed, epoch))
