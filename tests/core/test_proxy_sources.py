"""Proxy readers: the right shapes, several classes, seeded and balanced; clear errors when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.proxies import sources as ps
from core.errors import DatasetError
from tests.services import unavailable

WORDNET = Path("/usr/share/wordnet")
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _classes(labels: np.ndarray) -> int:
    return len(np.unique(labels))


def test_balanced_indices_round_robin():
    labels = np.array([0] * 100 + [1] * 5 + [2] * 50)
    chosen = ps.balanced_indices(labels, 30, seed=1)
    assert len(set(chosen)) == 30
    assert sorted(np.bincount(labels[chosen])) == [5, 12, 13]  # the small class is kept whole
    assert np.array_equal(chosen, ps.balanced_indices(labels, 30, seed=1))
    assert len(ps.balanced_indices(labels, 10_000, seed=0)) == len(labels)
    with pytest.raises(DatasetError):
        ps.balanced_indices(labels, 0, seed=0)


def test_wordnet_glosses():
    if not WORDNET.is_dir():
        unavailable(f"{WORDNET} is absent: install Debian's wordnet-base (scripts/system-packages.sh)")
    texts, labels = ps.wordnet_glosses(450, seed=0)
    assert len(texts) == len(labels) == 450 and labels.dtype == np.int64
    assert _classes(labels) == 45 and np.bincount(labels).min() == 10  # 45 lexicographer files
    assert all(isinstance(t, str) and t and "|" not in t[:1] for t in texts)
    again, _ = ps.wordnet_glosses(450, seed=0)
    other, _ = ps.wordnet_glosses(450, seed=1)
    assert again == texts and other != texts


def test_wordnet_missing(tmp_path):
    with pytest.raises(DatasetError, match="wordnet-base") as caught:
        ps.wordnet_glosses(10, root=tmp_path)
    assert caught.value.field == "alignment.proxy"


def test_wordnet_parses_lines(tmp_path):
    header = "  1 This software and database is being provided\n"
    for name, (lex, gloss) in zip(ps.WORDNET_FILES, [(3, "a thing"), (30, "to move"), (0, "good"), (2, "fast")]):
        (tmp_path / name).write_text(header + f"00001740 {lex:02d} n 01 entity 0 000 | {gloss}  \n")
    texts, labels = ps.wordnet_glosses(10, root=tmp_path)
    assert sorted(zip(labels.tolist(), texts)) == [(0, "good"), (2, "fast"), (3, "a thing"), (30, "to move")]


def test_fashion_mnist():
    if not FASHION.is_dir():
        unavailable(f"{FASHION} is absent: install Debian's dataset-fashion-mnist (scripts/system-packages.sh)")
    images, labels = ps.fashion_mnist(200, seed=0)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [20] * 10
    assert images.max() > 200


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        ps.fashion_mnist(10, root=tmp_path)


def test_digits_images():
    images, labels = ps.digits_images(100, seed=0)
    assert images.shape == (100, 8, 8) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert _classes(labels) == 10


def test_npz_proxy(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 3, 8, 8)), y=np.arange(40) % 4)
    x, y = ps.npz_proxy(path, 20, seed=0)
    assert x.shape == (20, 3, 8, 8) and x.dtype == np.float32 and np.bincount(y).tolist() == [5] * 4


def test_npz_proxy_must_be_classification(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, x=np.ones((10, 1, 4)), y=np.linspace(0, 1, 10))
    with pytest.raises(DatasetError) as caught:
        ps.npz_proxy(path, 5)
    assert caught.value.field == "alignment.proxy" and "y:" in caught.value.message


def _write_cifar_bin(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        records = rng.integers(0, 256, (per_batch, ps.CIFAR_RECORD), dtype=np.uint8)
        records[:, 0] = np.arange(per_batch) % 10
        records.tofile(folder / f"data_batch_{i}.bin")


def test_cifar10_binary(tmp_path):
    _write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    for where in (tmp_path, tmp_path / "cifar-10-batches-bin"):
        images, labels = ps.cifar10_local(where, 50, seed=0)
        assert images.shape == (50, 3, 32, 32) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert np.bincount(labels).tolist() == [5] * 10


def test_cifar10_python_release_is_refused(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(DatasetError, match="pickled") as caught:
        ps.cifar10_local(tmp_path, 10)
    assert caught.value.field == "alignment.proxy"


def test_cifar10_bad_batch(tmp_path):
    _write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(b"short")
    with pytest.raises(DatasetError, match="not a CIFAR-10 binary batch"):
        ps.cifar10_local(tmp_path, 10)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
end NN I-NP O

Japan NNP B-NP B-LOC
and CC O O
Jim NNP B-NP B-PER
Smith NNP I-NP I-PER
"""


def test_conll2003(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL)
    for where in (tmp_path, tmp_path / "train.txt"):
        texts, labels = ps.conll2003_local(where, 100, seed=0)
        got = dict(zip(texts, labels.tolist()))
        assert got == {"EU rejects German call .": 2, "Peter Blackburn": 3, "BRUSSELS 1996-08-22": 0,
                       "Japan and Jim Smith": 3}


def test_conll2003_missing(tmp_path):
    with pytest.raises(DatasetError, match="CoNLL-2003"):
        ps.conll2003_local(tmp_path, 10)
