"""Contrastive embedder training (stage 1 of contrastive_pare): noise views, label weights, the loss.

- Views: each sample is perturbed T times at each of K noise scales,
  x^t = sqrt(1 - sigma^2) x^(t-1) + sigma eps, eps ~ N(0, I), x^0 = x; the views are the K*T
  x^t (t = 1..T). A unit-variance input keeps unit variance. Built per batch, never for the set.
- Similarity: s(z_i, z_j) = exp(cos(z_i, z_j) / tau). The deck writes s = cos, but a cosine can be
  negative and the loss takes a log of sums of s, so the exponential (as in InfoNCE) is used.
- Loss per label Y present in the batch:
  L_Y = -log[ sum_{i != j, y_i = y_j = Y} s_ij / sum_{i: y_i = Y} sum_{j != i} lambda_ij s_ij ],
  averaged over the labels with at least two members (views of one sample count as members).
- Weights: corr_ij is the Pearson correlation of the label vectors (one-hot classes; flattened
  targets of dense tasks; one-hot k-means labels when a target is a single number), clipped to
  [0, 1] (anti-correlated is treated as uncorrelated). lambda_ij = 1 / (corr_ij + eps), rescaled to
  mean 1 over the different-label pairs of the batch (the "proportional to"), and lambda_ij = 1 when
  y_i = y_j. For classes every different-label pair has corr 0, so all weights are 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def noise_views(x: torch.Tensor, scales: Sequence[float], steps: int, generator: torch.Generator) -> torch.Tensor:
    """(K*T*B, ...) views, ordered scale-major then step then sample."""
    views = []
    for sigma in scales:
        current = x
        for _ in range(steps):
            noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            current = (1 - sigma ** 2) ** 0.5 * current + sigma * noise
            views.append(current)
    return torch.cat(views)


def label_correlation(vectors: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between rows of (M, D) label vectors, clipped to [0, 1]; 0 for constant rows."""
    centred = vectors.float() - vectors.float().mean(dim=1, keepdim=True)
    unit = F.normalize(centred, dim=1)
    return (unit @ unit.T).clamp(0.0, 1.0)


def pair_weights(labels: torch.Tensor, vectors: torch.Tensor, eps: float) -> torch.Tensor:
    """lambda (M, M): 1 on same-label pairs; 1 / (corr + eps) with mean 1 over different-label pairs."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    raw = 1.0 / (label_correlation(vectors) + eps)
    different = ~same
    if different.any():
        raw = raw / raw[different].mean()
    return torch.where(same, torch.ones_like(raw), raw)


def contrastive_loss(z: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over labels of L_Y, computed in log space (logsumexp) for stability."""
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.T / temperature  # log s_ij
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_weighted = (logits + weights.clamp_min(1e-30).log()).masked_fill(eye, float("-inf"))
    same = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    losses = []
    for label in labels.unique():
        members = labels == label
        if members.sum() < 2:
            continue
        positive = logits[members][:, members].masked_fill(~same[members][:, members], float("-inf"))
        losses.append(torch.logsumexp(log_weighted[members].flatten(), 0) - torch.logsumexp(positive.flatten(), 0))
    if not losses:
        return z.sum() * 0.0
    return torch.stack(losses).mean()
