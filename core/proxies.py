"""Source proxies: labelled feature banks in the body's input space, computed once and cached on disk.

A feature is the token mean of what the body's frozen pretrained input embedding makes of a proxy
sample (text: WordNet glosses through the word embedding; images: Fashion-MNIST through the patch
embedding). Array proxies on a text body (digits, a custom `.npz`) have no pretrained embedding
of their own: they go through a frozen embedder of our design built from a fixed seed, so they act
as a class-structured target distribution rather than a pretrained-modality anchor.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from core.bodies import Body
from core.data import proxy_sources
from core.embedders import build_embedder
from core.errors import ConfigError

TEXT_PROXIES = ("wordnet", "conll2003")
PROXY_SEED = 0
BATCH = 256


@dataclass(frozen=True)
class ProxyBank:
    features: torch.Tensor  # (N, d) float32, mean-pooled embedding outputs
    labels: torch.Tensor  # (N,) int64
    name: str


def cache_dir() -> Path:
    return Path(os.environ.get("XMODAL_CACHE_DIR", Path.home() / ".cache" / "xmodal")) / "proxies"


def resolve_proxy_name(proxy: str, body: Body) -> str:
    """`auto` follows the body's pretraining modality."""
    if proxy == "auto":
        return "wordnet" if body.kind == "text" else "fashion-mnist"
    return proxy


def _fingerprint(body: Body) -> str:
    digest = hashlib.sha256(body.name.encode())
    for name, tensor in sorted(body.source_embedding.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().flatten()[:4096].numpy().tobytes())
    return digest.hexdigest()[:16]


def load_raw_proxy(name: str, samples: int) -> tuple[object, np.ndarray]:
    """Raw samples and labels: a list of strings for text proxies, channel-first arrays otherwise."""
    if name == "wordnet":
        return proxy_sources.wordnet_glosses(samples, seed=PROXY_SEED)
    if name == "fashion-mnist":
        images, labels = proxy_sources.fashion_mnist(samples, seed=PROXY_SEED)
        return _channels_first_images(images), labels
    if name == "digits":
        images, labels = proxy_sources.digits_images(samples, seed=PROXY_SEED)
        return _channels_first_images(images), labels
    if name.startswith("cifar10:"):
        return proxy_sources.cifar10_local(Path(name.split(":", 1)[1]), samples, PROXY_SEED)
    if name.startswith("conll2003:"):
        return proxy_sources.conll2003_local(Path(name.split(":", 1)[1]), samples, PROXY_SEED)
    if name.endswith(".npz"):
        return proxy_sources.npz_proxy(Path(name), samples, seed=PROXY_SEED)
    raise ConfigError(f"unknown proxy {name!r}; expected auto, wordnet, fashion-mnist, digits, "
                      "cifar10:PATH, conll2003:PATH or a path to a labelled .npz", field="alignment.proxy")


@torch.no_grad()
def _text_features(body: Body, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(body.tokenizer_dir) if body.tokenizer_dir else body.name)
    out = []
    for start in range(0, len(texts), BATCH):
        batch = tokenizer(texts[start:start + BATCH], padding=True, truncation=True,
                          max_length=min(64, body.max_positions), return_tensors="pt")
        hidden = body.source_embedding(input_ids=batch["input_ids"])
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def _channels_first_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W) images, bytes or floats -> float32 (N, 1, H, W) in [0, 1]."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images.astype(np.float32) / scale)[:, None]


@torch.no_grad()
def _array_features(body: Body, samples: np.ndarray, target_seq_len: int) -> torch.Tensor:
    """Features of channel-first arrays (N, C, L) or (N, C, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if body.kind == "vision":
        if x.dim() != 4:
            raise ConfigError("a vision body needs an image proxy (N, C, H, W)", field="alignment.proxy")
        channels = body.source_embedding.patch_embeddings.projection.in_channels
        x = F.interpolate(x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x,
                          size=(body.image_size, body.image_size), mode="bilinear", align_corners=False)
        embed = lambda chunk: body.source_embedding(chunk)[0]  # noqa: E731 - SwinEmbeddings -> (tokens, dims)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(PROXY_SEED)
            embedder = build_embedder(body, tuple(x.shape[1:]), target_seq_len, None).eval()
        embed = lambda chunk: embedder(chunk)[0]  # noqa: E731
    return torch.cat([embed(x[i:i + BATCH]).mean(1) for i in range(0, len(x), BATCH)])


def _file_tag(name: str) -> str:
    path = Path(name.split(":", 1)[-1])
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return ""


def load_proxy_bank(proxy: str, body: Body, samples: int, target_seq_len: int) -> ProxyBank:
    """Features of `samples` proxy examples through the body's frozen input embedding, cached on disk."""
    name = resolve_proxy_name(proxy, body)
    if name.split(":", 1)[0] in TEXT_PROXIES and body.kind != "text":
        raise ConfigError(f"proxy {name!r} is text; body {body.name!r} is a vision model", field="alignment.proxy")
    key = "|".join([name, _file_tag(name), _fingerprint(body), str(samples), str(target_seq_len), "v1"])
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
    if path.exists():
        stored = load_file(str(path))
        return ProxyBank(stored["features"], stored["labels"], name)
    raw, labels = load_raw_proxy(name, samples)
    if isinstance(raw, list):
        features = _text_features(body, raw)
    else:
        features = _array_features(body, raw, target_seq_len)
    labels = torch.from_numpy(np.asarray(labels)).long()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": features.float().contiguous(), "labels": labels.contiguous()}, str(temp))
    os.replace(temp, path)
    return ProxyBank(features.float(), labels, name)
