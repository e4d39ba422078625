"""Heads h: map body output tokens to the task's prediction shape."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.config import TaskType

DENSE_TASKS = (TaskType.dense_regression, TaskType.dense_binary)


class PooledHead(nn.Module):
    """Mean over tokens, then Linear: classification, multilabel and scalar regression."""

    def __init__(self, width: int, outputs: int, squeeze: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(width, outputs)
        self.squeeze = squeeze

    def forward(self, hidden: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        out = self.linear(hidden.mean(dim=1))
        return out.squeeze(-1) if self.squeeze else out


class TokenPatchHead(nn.Module):
    """Each token predicts the values of its own input patch (1D: s values; 2D: p x p values).

    The reference averages hidden dims down to s values with no parameters; a Linear(d -> s) is the
    better default and is what this does.
    """

    def __init__(self, width: int, patch: int, spatial: tuple[int, ...], out_channels: int,
                 target_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.patch, self.spatial, self.out_channels = patch, spatial, out_channels
        self.target_shape = target_shape
        values = out_channels * patch ** len(spatial)
        self.linear = nn.Linear(width, values)

    def forward(self, hidden: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        batch, tokens, _ = hidden.shape
        values = self.linear(hidden)  # (B, T, C_out * p^k)
        if len(self.spatial) == 1:
            out = values.view(batch, tokens, self.out_channels, self.patch).permute(0, 2, 1, 3)
            out = out.reshape(batch, self.out_channels, tokens * self.patch)
        else:
            gh, gw = grid
            out = values.view(batch, gh, gw, self.out_channels, self.patch, self.patch)
            out = out.permute(0, 3, 1, 4, 2, 5).reshape(batch, self.out_channels, gh * self.patch, gw * self.patch)
            out = out[:, :, : self.spatial[0], : self.spatial[1]]
        return out.reshape(batch, *self.target_shape)


class UpsampleHead(nn.Module):
    """Light decoder for hierarchical vision bodies: 1x1 conv on the last token map, bilinear to H x W."""

    def __init__(self, width: int, spatial: tuple[int, int], out_channels: int,
                 target_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.spatial, self.target_shape = spatial, target_shape
        self.mix = nn.Sequential(nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, out_channels, 1))

    def forward(self, hidden: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        batch, tokens, width = hidden.shape
        side = int(math.isqrt(tokens))
        feature_map = hidden.transpose(1, 2).reshape(batch, width, side, tokens // side)
        out = F.interpolate(self.mix(feature_map), size=self.spatial, mode="bilinear", align_corners=False)
        return out.reshape(batch, *self.target_shape)


def build_head(task: TaskType, width: int, *, num_outputs: int, input_shape: tuple[int, ...],
               target_shape: tuple[int, ...], patch: int | None, vision_body: bool) -> nn.Module:
    """Pick the head for a task; `patch` is the embedder's stride (1D) or patch side (2D text body)."""
    if task == TaskType.classification:
        return PooledHead(width, num_outputs, squeeze=False)
    if task == TaskType.multilabel:
        return PooledHead(width, target_shape[0], squeeze=False)
    if task == TaskType.scalar_regression:
        return PooledHead(width, 1, squeeze=True)
    spatial = tuple(input_shape[1:])
    out_channels = target_shape[0] if len(target_shape) == len(spatial) + 1 else 1
    if vision_body:
        return UpsampleHead(width, spatial, out_channels, target_shape)
    assert patch is not None
    return TokenPatchHead(width, patch, spatial, out_channels, target_shape)
