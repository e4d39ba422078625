"""Loading a checkpoint never unpickles: pickle-based weight files beside the safetensors are
ignored, and a pickle under the safetensors name is refused without running it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import core
from core.checkpoint import WEIGHTS, build_manifest, save_model
from core.config import parse_config
from core.data.prepare import Normalisation
from core.errors import CheckpointError
from core.modeling.model import ModelSpec, build_model
from core.modeling.tasks import TaskType


class _Payload:
    """Unpickling this creates `marker`: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    config = parse_config({"method": "finetune", "body": {"name": "tiny-bert"}})
    spec = ModelSpec(TaskType.classification, (1, 16), (), 2)
    model, body = build_model(config, spec)
    manifest = build_manifest(config, spec, body.model.config.to_dict(), Normalisation([0.0], [1.0]), "0" * 64)
    directory = tmp_path / "ckpt"
    save_model(directory, model, manifest)
    return directory


def test_pickled_weight_files_beside_the_safetensors_are_ignored(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    for name in ("pytorch_model.bin", "model.pt", "model.pth", "training_args.bin", "model.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(_Payload(marker)))
    prediction = core.load_checkpoint(checkpoint).predict(np.zeros((2, 1, 16), dtype=np.float32))
    assert prediction.shape == (2,) and not marker.exists()


def test_a_pickle_under_the_safetensors_name_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    (checkpoint / WEIGHTS).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="cannot read"):  # a user error, not a raw SafetensorError
        core.load_checkpoint(checkpoint)
    assert not marker.exists()


def test_without_safetensors_weights_a_pickle_is_not_a_fallback(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    (checkpoint / WEIGHTS).unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="cannot read model.safetensors"):
        core.load_checkpoint(checkpoint)
    assert not marker.exists()
