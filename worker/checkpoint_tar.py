"""Checkpoint directories as single blobs: an uncompressed tar in, a safe extraction out."""

from __future__ import annotations

import tarfile
from pathlib import Path


def tar_directory(directory: Path, dest: Path) -> None:
    """An uncompressed tar of the directory's contents, names relative to it, in a stable order."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)


def extract_checkpoint(tar_path: Path, dest: Path) -> Path:
    """Unpack a checkpoint tar, refusing links and paths outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest
