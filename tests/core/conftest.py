"""Shared fixtures: small synthetic datasets written as uploads would be, and an isolated cache."""

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Proxy feature banks are cached per test session, never in the user's home."""
    monkeypatch.setenv("XMODAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xmodal-cache"))


def write_classification_1d(path: Path, n: int = 96, length: int = 64, seed: int = 0) -> Path:
    """Two classes told apart by the level of a noisy sine: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n + 32)
    t = np.linspace(0, 4 * np.pi, length)
    x = np.sin(t)[None, :] + (2.0 * y[:, None] - 1.0) + 0.5 * rng.standard_normal((n + 32, length))
    x = x[:, None, :].astype(np.float32)
    np.savez(path, x=x[:n], y=y[:n].astype(np.int64), x_test=x[n:], y_test=y[n:].astype(np.int64))
    return path


def write_dense_2d(path: Path, n: int = 48, side: int = 16, seed: int = 0) -> Path:
    """A smoothing operator on 16x16 fields: a 2D dense regression task like Darcy flow."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 16, 1, side, side)).astype(np.float32)
    y = (x[:, 0] + np.roll(x[:, 0], 1, axis=1) + np.roll(x[:, 0], 1, axis=2)).astype(np.float32) / 3 + 1.0
    np.savez(path, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    return path


@pytest.fixture
def classification_1d(tmp_path) -> Path:
    return write_classification_1d(tmp_path / "train.npz")


@pytest.fixture
def dense_2d(tmp_path) -> Path:
    return write_dense_2d(tmp_path / "dense.npz")
