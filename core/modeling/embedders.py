"""Embedders f: turn a target sample into tokens the body accepts (ORCA's dimensionality alignment).

1D (C, L): Conv1d with kernel = stride = s, s the smallest divisor of L giving at most
`target_seq_len` tokens, then the body's learned position embeddings and LayerNorm, in the order
`embedder.norm` picks. ORCA's order (LayerNorm, then positions) normalises away each patch's scale
after a bias-free conv: with one value per token only its sign reaches the body. LayerNorm over
patch + position, the order of the pretrained embedding layer itself, keeps it.
2D (C, H, W): vision bodies resize to their image size and use a patch conv initialised from the
pretrained one (RGB kernel tiled over C); text bodies cut p x p patches so the tokens fit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core.config import EmbedderConfig
from core.modeling.bodies import Body
from core.errors import ConfigError


def patch_stride_1d(length: int, target_seq_len: int, max_positions: int) -> int:
    """Smallest divisor s of `length` with length / s <= min(target_seq_len, max_positions)."""
    limit = min(target_seq_len, max_positions)
    for s in range(1, length + 1):
        if length % s == 0 and length // s <= limit:
            return s
    return length


def patch_size_2d(height: int, width: int, target_seq_len: int, max_positions: int) -> int:
    """Smallest square patch p whose padded grid has at most min(target_seq_len, max_positions) tokens."""
    limit = min(target_seq_len, max_positions)
    for p in range(1, max(height, width) + 1):
        if math.ceil(height / p) * math.ceil(width / p) <= limit:
            return p
    return max(height, width)


def _copy_layer_norm(norm: nn.LayerNorm, source: nn.Module | None) -> None:
    if isinstance(source, nn.LayerNorm) and source.normalized_shape == norm.normalized_shape:
        norm.load_state_dict(source.state_dict())


class _TextBodyEmbedder(nn.Module):
    """Shared set-up for text bodies: Xavier patch conv, the body's LayerNorm and its first positions."""

    def _init_tokens(self, body: Body, projection: nn.Module, num_tokens: int, norm: str) -> None:
        self.num_tokens = num_tokens
        self.norm_mode = norm
        self.projection = projection
        nn.init.xavier_uniform_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        self.norm = nn.LayerNorm(body.width, eps=1e-12)
        _copy_layer_norm(self.norm, getattr(body.source_embedding, "LayerNorm", None))
        self.positions = nn.Parameter(body.source_embedding.position_embeddings.weight[:num_tokens].detach().clone())

    def _finish(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, T, d) patch projections -> body tokens: positions and LayerNorm in the configured order."""
        if self.norm_mode == "positions_first":
            return self.norm(patches + self.positions)
        if self.norm_mode == "sequence":  # one mean and variance per sample, then the LayerNorm's affine
            flat = F.layer_norm(patches, patches.shape[1:], eps=self.norm.eps)
            return flat * self.norm.weight + self.norm.bias + self.positions
        return self.norm(patches) + self.positions


class Embedder1D(_TextBodyEmbedder):
    """(B, C, L) -> (B, L/s, d): conv patches, positions and LayerNorm."""

    def __init__(self, body: Body, channels: int, length: int, target_seq_len: int, norm: str) -> None:
        super().__init__()
        self.stride = patch_stride_1d(length, target_seq_len, body.max_positions)
        self._init_tokens(body, nn.Conv1d(channels, body.width, kernel_size=self.stride, stride=self.stride),
                          length // self.stride, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self._finish(self.projection(x).transpose(1, 2)), None


class Embedder2DText(_TextBodyEmbedder):
    """(B, C, H, W) -> (B, T, d) for a text body: p x p patches (input padded), positions and LayerNorm."""

    def __init__(self, body: Body, channels: int, height: int, width: int, target_seq_len: int,
                 patch_size: int | None, norm: str) -> None:
        super().__init__()
        self.patch = patch_size or patch_size_2d(height, width, target_seq_len, body.max_positions)
        self.grid = (math.ceil(height / self.patch), math.ceil(width / self.patch))
        tokens = self.grid[0] * self.grid[1]
        if tokens > body.max_positions:
            raise ConfigError(f"patch size {self.patch} gives {tokens} tokens, more than the body's "
                              f"{body.max_positions} positions", field="embedder.patch_size")
        self.pad = (0, self.grid[1] * self.patch - width, 0, self.grid[0] * self.patch - height)
        self._init_tokens(body, nn.Conv2d(channels, body.width, kernel_size=self.patch, stride=self.patch),
                          tokens, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return self._finish(self.projection(F.pad(x, self.pad)).flatten(2).transpose(1, 2)), self.grid


class Embedder2DVision(nn.Module):
    """(B, C, H, W) -> Swin tokens: resize to the body's image size, pretrained patch conv tiled over C."""

    def __init__(self, body: Body, channels: int) -> None:
        super().__init__()
        source = body.source_embedding.patch_embeddings.projection
        self.image_size = int(body.image_size or 224)
        self.projection = nn.Conv2d(channels, source.out_channels, kernel_size=source.kernel_size,
                                    stride=source.stride)
        with torch.no_grad():
            kernel = source.weight.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)
            kernel *= source.weight.shape[1] / channels  # keep the response scale of the RGB kernel
            self.projection.weight.copy_(kernel)
            self.projection.bias.copy_(source.bias)
        self.norm = nn.LayerNorm(source.out_channels)
        _copy_layer_norm(self.norm, body.source_embedding.norm)
        side = self.image_size // source.stride[0]
        self.grid = (side, side)
        self.num_tokens = side * side

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        tokens = self.projection(x).flatten(2).transpose(1, 2)
        return self.norm(tokens), self.grid


def build_embedder(body: Body, input_shape: tuple[int, ...], config: EmbedderConfig) -> nn.Module:
    """Pick the embedder for a per-sample input shape (C, L) or (C, H, W)."""
    if len(input_shape) == 2:
        if body.kind == "vision":
            raise ConfigError("1D inputs need a text body (vision bodies take (C, H, W))", field="body.name")
        return Embedder1D(body, input_shape[0], input_shape[1], config.target_seq_len, config.norm)
    channels, height, width = input_shape
    if body.kind == "vision":
        return Embedder2DVision(body, channels)
    return Embedder2DText(body, channels, height, width, config.target_seq_len, config.patch_size, config.norm)
