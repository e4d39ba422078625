"""Proxy samples through the body's frozen pretrained input embedding: one bank, two views of it.

- Text proxies on a text body: `body.source_embedding(input_ids=...)`, padded/truncated to a fixed
  number of tokens; padding is marked invalid so it is never picked, nor averaged, as a real token.
- Image proxies on a vision body: the Swin patch embedding at the body's image size.
- Array proxies (images included) are standardised per channel first, as every target is.
- Array proxies on a text body (digits, a custom `.npz`): no pretrained embedding of their own exists,
  so a frozen embedder of our design built from a fixed seed stands in; they act as a
  class-structured target distribution rather than a pretrained-modality anchor.

Token sequences of thousands of samples do not fit in memory (5000 x 3136 x 128 floats for Swin), so
the bank keeps the raw proxy (token ids or arrays) and embeds each drawn batch on the fly. ORCA needs
only each sample's token mean, computed once and cached on disk (`load_proxy_features`).
Batches come from a looping loader whose order depends only on (seed, epoch, batch), so a resumed run
draws the same source samples; they are not matched to target classes (as in the reference).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core.config import TaskType
from core.data.prepare import fit_normalisation
from core.errors import ConfigError
from core.modeling.bodies import Body
from core.config import EmbedderConfig
from core.modeling.embedders import build_embedder
from core.proxies import sources
from core.training.streams import batch_generator

TEXT_PROXIES = ("wordnet", "conll2003")
PROXY_SEED = 0
FEATURE_TOKENS = 64  # text proxies are cut to this many tokens for features (and MoNA's source batches)
BATCH = 256

Embed = Callable[[torch.Tensor, torch.device], torch.Tensor]


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
        tokens = self.embed(self.inputs[index], device).float()
        if self.valid is None:
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        return tokens, self.valid[index].to(device)

    def features(self, device: torch.device) -> torch.Tensor:
        """(S, d) mean of each sample's real tokens, on the CPU."""
        out = []
        for start in range(0, len(self), BATCH):
            tokens, valid = self.tokens(torch.arange(start, min(start + BATCH, len(self))), device)
            weights = valid.unsqueeze(-1).float()
            out.append(((tokens * weights).sum(1) / weights.sum(1)).cpu())
        return torch.cat(out)


def resolve_proxy_name(proxy: str, body: Body) -> str:
    """A named proxy, checked against the body: a text proxy needs a text body. `auto` is no name here:
    the recipes measure it into one first (`core.methods.proxy_setup.proxy_for`)."""
    if proxy == "auto":
        raise ConfigError("proxy auto must be chosen (core.methods.proxy_setup.proxy_for) before the proxy loads",
                          field="alignment.proxy")
    if proxy.split(":", 1)[0] in TEXT_PROXIES and body.kind != "text":
        raise ConfigError(f"proxy {proxy!r} is text; body {body.name!r} is a vision model", field="alignment.proxy")
    return proxy


def load_raw_proxy(name: str, samples: int) -> tuple[list[str] | np.ndarray, np.ndarray]:
    """Raw samples and labels: a list of strings for text proxies, channel-first arrays otherwise."""
    if name == "wordnet":
        return sources.wordnet_glosses(samples, seed=PROXY_SEED)
    if name == "fashion-mnist":
        images, labels = sources.fashion_mnist(samples, seed=PROXY_SEED)
        return _channels_first_images(images), labels
    if name == "digits":
        images, labels = sources.digits_images(samples, seed=PROXY_SEED)
        return _channels_first_images(images), labels
    if name.startswith("cifar10:"):
        return sources.cifar10_local(Path(name.split(":", 1)[1]), samples, PROXY_SEED)
    if name.startswith("conll2003:"):
        return sources.conll2003_local(Path(name.split(":", 1)[1]), samples, PROXY_SEED)
    if name.endswith(".npz"):
        return sources.npz_proxy(Path(name), samples, seed=PROXY_SEED)
    raise ConfigError(f"unknown proxy {name!r}; expected auto, wordnet, fashion-mnist, digits, "
                      "cifar10:PATH, conll2003:PATH or a path to a labelled .npz", field="alignment.proxy")


def _channels_first_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images, bytes or floats -> float32 (N, 1, H, W) in [0, 1]."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images.astype(np.float32) / scale)[:, None]


def _text_bank(body: Body, texts: list[str], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, Embed]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(body.tokenizer_dir) if body.tokenizer_dir else body.name)
    length = max(2, min(num_tokens, body.max_positions))
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")

    def embed(ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        return body.source_embedding(input_ids=ids.to(device))

    return batch["input_ids"], batch["attention_mask"].bool(), embed


def _array_bank(body: Body, samples: np.ndarray, target_seq_len: int, device: torch.device) -> tuple[torch.Tensor, Embed]:
    """Array samples are standardised per channel on their own statistics, as a target's are
    (`core.data.prepare`), so that a proxy and a target of one kind enter the embedding alike."""
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    x = fit_normalisation(samples, np.zeros(len(samples)), TaskType.classification).apply_x(x)
    if body.kind == "vision":
        if x.dim() != 4:
            raise ConfigError("a vision body needs an image proxy (N, C, H, W)", field="alignment.proxy")
        channels = body.source_embedding.patch_embeddings.projection.in_channels

        def embed_image(chunk: torch.Tensor, device: torch.device) -> torch.Tensor:
            chunk = chunk.to(device)
            chunk = chunk.expand(-1, channels, -1, -1) if chunk.shape[1] == 1 else chunk
            chunk = F.interpolate(chunk, size=(body.image_size, body.image_size), mode="bilinear", align_corners=False)
            return body.source_embedding(chunk)[0]  # SwinEmbeddings -> (tokens, grid)

        return x, embed_image
    with torch.random.fork_rng():
        torch.manual_seed(PROXY_SEED)
        # a fixed random embedder; ORCA's token norm keeps the cached proxy features as they were
        config = EmbedderConfig(target_seq_len=target_seq_len, norm="token")
        embedder = build_embedder(body, tuple(x.shape[1:]), config).eval()
    embedder.requires_grad_(False)
    embedder.to(device)

    def embed_array(chunk: torch.Tensor, device: torch.device) -> torch.Tensor:
        return embedder(chunk.to(device))[0]

    return x, embed_array


def load_source_tokens(proxy: str, body: Body, samples: int, target_seq_len: int, num_tokens: int,
                       device: torch.device) -> SourceTokenBank:
    """The proxy as a bank of source token sequences; text is cut/padded to `num_tokens` tokens."""
    name = resolve_proxy_name(proxy, body)
    raw, raw_labels = load_raw_proxy(name, samples)
    labels = torch.from_numpy(np.asarray(raw_labels)).long()
    if isinstance(raw, list):
        inputs, valid, embed = _text_bank(body, raw, num_tokens)
        return SourceTokenBank(name, inputs, valid, labels, embed)
    inputs, embed = _array_bank(body, np.asarray(raw), target_seq_len, device)
    return SourceTokenBank(name, inputs, None, labels, embed)


@dataclass(frozen=True)
class ProxyFeatures:
    features: torch.Tensor  # (N, d) float32, mean-pooled embedding outputs
    labels: torch.Tensor  # (N,) int64
    name: str


def cache_dir() -> Path:
    return Path(os.environ.get("XMODAL_CACHE_DIR", Path.home() / ".cache" / "xmodal")) / "proxies"


def _fingerprint(body: Body) -> str:
    digest = hashlib.sha256(body.name.encode())
    for name, tensor in sorted(body.source_embedding.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().flatten()[:4096].numpy().tobytes())
    return digest.hexdigest()[:16]


def _file_tag(name: str) -> str:
    path = Path(name.split(":", 1)[-1])
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return ""


def load_proxy_features(proxy: str, body: Body, samples: int, target_seq_len: int,
                        device: torch.device) -> ProxyFeatures:
    """Token means of `samples` proxy examples through the body's frozen input embedding, cached on disk."""
    name = resolve_proxy_name(proxy, body)
    key = "|".join([name, _file_tag(name), _fingerprint(body), str(samples), str(target_seq_len), "v3"])
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
    if path.exists():
        stored = load_file(str(path))
        return ProxyFeatures(stored["features"], stored["labels"], name)
    bank = load_source_tokens(name, body, samples, target_seq_len, FEATURE_TOKENS, device)
    features = bank.features(device).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": features, "labels": bank.labels.contiguous()}, str(temp))
    os.replace(temp, path)
    return ProxyFeatures(features, bank.labels, name)


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
            order = torch.randperm(self.size, generator=batch_generator(self.seed, epoch, cycle))
            chosen = cycles == cycle
            out[chosen] = order[positions[chosen] % self.size]
        return out
