"""Inputs for `predict`: `x` from an `.npz` (training-style file) or a bare `.npy`, never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.errors import DatasetError


def load_inputs(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise DatasetError(f"{path} has no array 'x' (found {', '.join(archive.files) or 'none'})", field="x")
                x = archive["x"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}", field="file") from None
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"expected a numeric array, got dtype {x.dtype}", field="x")
    if not np.isfinite(x).all():
        raise DatasetError("contains NaN or Inf", field="x")
    return x.astype(np.float32, copy=False)
