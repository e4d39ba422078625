"""Source token banks: proxy samples as token sequences from the body's frozen pretrained embedding.

Patch replacement mixes whole source tokens into target sequences, so it needs the token sequences
(not the mean-pooled features `core.proxies` caches on disk). Token sequences of thousands of
samples do not fit in memory (5000 x 3136 x 128 floats for Swin), so the bank keeps the raw proxy
in memory for the run (token ids, or images) and embeds each drawn batch through the frozen
embedding on the fly:
- text proxies on a text body: `body.source_embedding(input_ids=...)`, padded/truncated to as many
  tokens as the target sequence; padding is marked invalid so it is never picked before a real token;
- image proxies on a vision body: the Swin patch embedding at the body's image size;
- array proxies on a text body: a frozen embedder of our design built from a fixed seed, as
  `core.proxies` does (no pretrained embedding of its own exists).
Batches come from a looping loader whose order depends only on (seed, epoch, batch), so a resumed
run draws the same source samples; they are not matched to target classes (as in the reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.bodies import Body
from core.embedders import build_embedder
from core.errors import ConfigError
from core.proxies import PROXY_SEED, TEXT_PROXIES, load_raw_proxy, resolve_proxy_name

Embed = Callable[[torch.Tensor, torch.device], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SourceTokenBank:
    """Raw proxy samples + labels; `tokens(index)` embeds the chosen ones through the frozen embedding."""

    name: str
    inputs: torch.Tensor  # token ids (S, L) or arrays (S, C, ...), kept on the CPU
    valid: torch.Tensor | None  # (S, L) attention mask for text, None when every token is real
    labels: torch.Tensor  # (S,) int64
    embed: Embed

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @torch.no_grad()
    def tokens(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Ns, d) source tokens and a (B, Ns) bool mask of real (non-padding) tokens."""
        tokens, valid = self.embed(self.inputs[index], device)
        if self.valid is not None:
            valid = self.valid[index].to(device)
        return tokens.float(), valid


def _text_bank(body: Body, texts: list[str], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, Embed]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(body.tokenizer_dir) if body.tokenizer_dir else body.name)
    length = max(2, min(num_tokens, body.max_positions))
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")

    def embed(ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = body.source_embedding(input_ids=ids.to(device))
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)

    return batch["input_ids"], batch["attention_mask"].bool(), embed


def _array_bank(body: Body, samples: np.ndarray, target_seq_len: int, device: torch.device) -> tuple[torch.Tensor, Embed]:
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if body.kind == "vision":
        if x.dim() != 4:
            raise ConfigError("a vision body needs an image proxy (N, C, H, W)", field="alignment.proxy")
        channels = body.source_embedding.patch_embeddings.projection.in_channels

        def embed(chunk: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
            chunk = chunk.to(device)
            chunk = chunk.expand(-1, channels, -1, -1) if chunk.shape[1] == 1 else chunk
            chunk = F.interpolate(chunk, size=(body.image_size, body.image_size), mode="bilinear", align_corners=False)
            tokens = body.source_embedding(chunk)[0]  # SwinEmbeddings -> (tokens, grid)
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)

        return x, embed
    with torch.random.fork_rng():
        torch.manual_seed(PROXY_SEED)
        embedder = build_embedder(body, tuple(x.shape[1:]), target_seq_len, None).eval()
    embedder.requires_grad_(False)
    embedder.to(device)

    def embed_array(chunk: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = embedder(chunk.to(device))[0]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)

    return x, embed_array


def load_source_tokens(proxy: str, body: Body, samples: int, target_seq_len: int, num_tokens: int,
                       device: torch.device) -> SourceTokenBank:
    """The proxy as a bank of source token sequences; text is cut/padded to `num_tokens` tokens."""
    name = resolve_proxy_name(proxy, body)
    if name.split(":", 1)[0] in TEXT_PROXIES and body.kind != "text":
        raise ConfigError(f"proxy {name!r} is text; body {body.name!r} is a vision model", field="alignment.proxy")
    raw, raw_labels = load_raw_proxy(name, samples)
    labels = torch.from_numpy(np.asarray(raw_labels)).long()
    if isinstance(raw, list):
        inputs, valid, embed = _text_bank(body, raw, num_tokens)
        return SourceTokenBank(name, inputs, valid, labels, embed)
    inputs, embed = _array_bank(body, np.asarray(raw), target_seq_len, device)
    return SourceTokenBank(name, inputs, None, labels, embed)


class LoopingLoader:
    """Indices into a bank of `size` samples: epochs of fresh permutations, looping when exhausted.

    Batch b of epoch e takes stream positions [b * batch_size, (b + 1) * batch_size); the stream is a
    chain of permutations seeded by (seed, epoch, cycle), so a batch depends on nothing else.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed

    def indices(self, epoch: int, batch: int, batch_size: int, count: int | None = None) -> torch.Tensor:
        positions = torch.arange(batch * batch_size, batch * batch_size + (count or batch_size))
        cycles = positions // self.size
        out = torch.empty_like(positions)
        for cycle in cycles.unique().tolist():
            seed = (self.seed * 1_000_003 + epoch * 10_007 + cycle) % (2**63 - 1)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
            chosen = cycles == cycle
            out[chosen] = order[positions[chosen] % self.size]
        return out
