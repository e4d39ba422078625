"""The cross-modal model: embedder f -> pretrained body g -> head h."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.modeling.bodies import Body, load_body
from core.config import JobConfig, TaskType
from core.modeling.embedders import Embedder1D, Embedder2DText, build_embedder
from core.modeling.heads import build_head


@dataclass(frozen=True)
class ModelSpec:
    """What the model's shapes depend on; stored in the checkpoint manifest to rebuild it."""

    task: TaskType
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    num_classes: int | None

    def as_dict(self) -> dict:
        return {"task": self.task.value, "input_shape": list(self.input_shape),
                "target_shape": list(self.target_shape), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(TaskType(data["task"]), tuple(data["input_shape"]), tuple(data["target_shape"]),
                   data["num_classes"])


class CrossModalModel(nn.Module):
    def __init__(self, body: Body, embedder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.embedder = embedder
        self.body = body.model
        self.head = head
        self._body = body  # the Body wrapper knows how to call this kind of encoder

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        return self.embedder(x)

    def encode(self, tokens: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """The body's hidden states for already-embedded tokens (patch replacement mixes tokens before this)."""
        return self._body.encode(tokens, grid)

    def forward_tokens(self, tokens: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """Body + head on already-embedded tokens."""
        return self.head(self.encode(tokens, grid), grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.embedder(x)
        return self.forward_tokens(tokens, grid)


def build_model(config: JobConfig, spec: ModelSpec, body: Body | None = None) -> tuple[CrossModalModel, Body]:
    """Assemble f, g, h around a (freshly loaded unless given) body."""
    body = body or load_body(config.body)
    embedder = build_embedder(body, spec.input_shape, config.embedder)
    if isinstance(embedder, Embedder1D):
        patch = embedder.stride
    elif isinstance(embedder, Embedder2DText):
        patch = embedder.patch
    else:
        patch = None
    head = build_head(spec.task, body.output_width, num_outputs=spec.num_classes or 1,
                      input_shape=spec.input_shape, target_shape=spec.target_shape, patch=patch,
                      vision_body=body.kind == "vision")
    return CrossModalModel(body, embedder, head), body


def apply_freeze(model: CrossModalModel, freeze: str) -> None:
    """Ablation switch: freeze the embedder, the body, both, or none during refinement."""
    for name, module in (("embedder", model.embedder), ("body", model.body)):
        frozen = freeze in (name, "both")
        for parameter in module.parameters():
            parameter.requires_grad_(not frozen)
