"""The checkpoint format: `model.safetensors` + `manifest.json`, enough to predict on a new machine.

The manifest carries the job config, the body's architecture config (so no hub or package is needed
to rebuild it), shapes, label map, normalisation, library versions and the dataset's sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.modeling.bodies import body_from_hf_config
from core.config import JobConfig, parse_config
from core.data.prepare import Normalisation
from core.errors import CheckpointError
from core.modeling.model import CrossModalModel, ModelSpec, build_model
from core.modeling.tasks import decode

FORMAT = "xmodal.checkpoint/1"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def library_versions() -> dict[str, str]:
    found = {}
    for package in ("xmodal", "torch", "transformers", "POT", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_manifest(config: JobConfig, spec: ModelSpec, body_config: dict, normalisation: Normalisation,
                   dataset_sha256: str, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "config": config.model_dump(mode="json"), "spec": spec.as_dict(),
            "body_config": body_config,
            "label_map": list(range(spec.num_classes)) if spec.num_classes else None,
            "normalisation": normalisation.as_dict(), "versions": library_versions(),
            "dataset_sha256": dataset_sha256, **extra}


def save_model(directory: Path, model: torch.nn.Module, manifest: dict[str, Any],
               state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights (the given state dict, e.g. the best one, or the model's) and the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else model.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(directory / WEIGHTS))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}", field="checkpoint") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xmodal checkpoint ({manifest.get('format')!r})", field="checkpoint")
    return manifest


@dataclass
class Predictor:
    """A loaded checkpoint: `predict(x)` takes raw inputs shaped like the training `x`."""

    model: CrossModalModel
    spec: ModelSpec
    normalisation: Normalisation
    manifest: dict[str, Any]
    device: torch.device

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != len(self.spec.input_shape) + 1 or tuple(x.shape[1:]) != self.spec.input_shape:
            raise CheckpointError(f"expected inputs of shape (N, {', '.join(map(str, self.spec.input_shape))}), "
                                  f"got {x.shape}", field="x")
        inputs = self.normalisation.apply_x(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        self.model.eval()
        outputs = [decode(self.spec.task, self.model(inputs[i:i + batch_size].to(self.device)),
                          self.normalisation.y_mean, self.normalisation.y_std).cpu()
                   for i in range(0, len(inputs), batch_size)]
        return torch.cat(outputs).numpy()


def load_model(directory: Path, device: torch.device | str = "cpu") -> Predictor:
    directory = Path(directory)
    manifest = read_manifest(directory)
    config = parse_config(manifest["config"])
    spec = ModelSpec.from_dict(manifest["spec"])
    body = body_from_hf_config(config.body.name, manifest["body_config"])
    model, _ = build_model(config, spec, body=body)
    try:
        weights = load_file(str(directory / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read {WEIGHTS}: {str(exc).splitlines()[0]}", field="checkpoint") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not match the manifest: {str(exc).splitlines()[0]}", field="checkpoint") from None
    device = torch.device(device)
    return Predictor(model.to(device).eval(), spec, Normalisation(**manifest["normalisation"]), manifest, device)


def load_checkpoint(directory: str | Path) -> Predictor:
    """Public entry point: `core.load_checkpoint(dir).predict(x)`."""
    return load_model(Path(directory), "cuda" if torch.cuda.is_available() else "cpu")
