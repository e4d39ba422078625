"""Assertions shared by the core tests."""

from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_same_weights(expected_dir: Path, actual_dir: Path) -> None:
    """Two checkpoints hold bit-identical weights (exact resume leaves no tolerance)."""
    a = load_file(str(Path(expected_dir) / "model.safetensors"))
    b = load_file(str(Path(actual_dir) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{actual_dir.name}: {key}")
