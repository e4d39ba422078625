"""Raw labelled proxy data, the source side of alignment: samples and integer class labels.

Every reader draws a seeded, class-balanced sample of at most `max_samples`: classes take turns
(round robin, in random order) until the budget is spent, so small classes are kept whole and
large ones are cut. Missing data raises DatasetError naming what to install or where to put it.
Nothing here unpickles: CIFAR-10 is read from its binary release, never from the python one.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np

from core.data.validate import load_npz
from core.errors import DatasetError

FIELD = "alignment.proxy"
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
CONLL_TYPES = ("LOC", "MISC", "ORG", "PER")
CIFAR_RECORD = 1 + 3 * 32 * 32


def balanced_indices(labels: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Indices of a seeded round-robin sample over classes, shuffled."""
    if max_samples < 1:
        raise DatasetError(f"need at least one proxy sample; got {max_samples}", field="alignment.proxy_samples")
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        rank[members] = np.arange(len(members))
    order = np.lexsort((rng.random(len(labels)), rank))
    return rng.permutation(order[:max_samples])


def wordnet_glosses(max_samples: int, seed: int = 0,
                    root: Path = Path("/usr/share/wordnet")) -> tuple[list[str], np.ndarray]:
    """Synset glosses labelled by lexicographer file (0..44: noun.animal, verb.motion, ...)."""
    glosses, labels = [], []
    for name in WORDNET_FILES:
        path = Path(root) / name
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            raise DatasetError(f"WordNet database not found at {path}; install the Debian package "
                               "wordnet-base (apt-get install wordnet-base)", field=FIELD) from None
        for line in lines:
            if line.startswith("  ") or " | " not in line:  # licence header, or a synset without gloss
                continue
            fields, gloss = line.split(" | ", 1)
            glosses.append(gloss.strip())
            labels.append(int(fields.split(" ", 2)[1]))
    if not glosses:
        raise DatasetError(f"no glosses found in the WordNet database at {root}", field=FIELD)
    labels_array = np.asarray(labels, dtype=np.int64)
    chosen = balanced_indices(labels_array, max_samples, seed)
    return [glosses[i] for i in chosen], labels_array[chosen]


def _read_idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data, dtype=">i4", count=1 + (magic & 0xFF))
    if int(header[0]) != magic:
        raise DatasetError(f"{path.name} is not an idx file (magic {int(header[0])})", field=FIELD)
    shape = tuple(int(d) for d in header[1:])
    return np.frombuffer(data, dtype=np.uint8, offset=4 * len(header)).reshape(shape)


def fashion_mnist(max_samples: int, seed: int = 0,
                  root: Path = Path("/usr/share/datasets/fashion-mnist")) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) images of the training split and their 10 class labels."""
    images_path, labels_path = Path(root) / "train-images-idx3-ubyte.gz", Path(root) / "train-labels-idx1-ubyte.gz"
    if not (images_path.is_file() and labels_path.is_file()):
        raise DatasetError(f"Fashion-MNIST not found in {root}; install the Debian package "
                           "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)", field=FIELD)
    try:
        images, labels = _read_idx(images_path, 2051), _read_idx(labels_path, 2049)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"cannot read Fashion-MNIST in {root}: {exc}", field=FIELD) from None
    chosen = balanced_indices(labels, max_samples, seed)
    return images[chosen].copy(), labels[chosen].astype(np.int64)


def digits_images(max_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as float32 (N, 8, 8) in [0, 1], 10 classes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    chosen = balanced_indices(data.target, max_samples, seed)
    return (data.images[chosen] / 16.0).astype(np.float32), data.target[chosen].astype(np.int64)


def npz_proxy(path: Path, max_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training split of any labelled classification `.npz` upload, validated."""
    try:
        arrays, _ = load_npz(path, task="classification")
    except DatasetError as exc:
        raise DatasetError(f"proxy {path}: {exc}", field=FIELD) from None
    chosen = balanced_indices(arrays["y"], max_samples, seed)
    return arrays["x"][chosen], arrays["y"][chosen]


def cifar10_local(path: Path, max_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 training images from the binary release, as float32 (N, 3, 32, 32) in [0, 1].

    `path` is the `cifar-10-batches-bin` directory or the directory holding it.
    """
    path = Path(path)
    folder = path / "cifar-10-batches-bin" if (path / "cifar-10-batches-bin").is_dir() else path
    batches = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
    if not all(batch.is_file() for batch in batches):
        hint = (" (found the python release, which is pickled and refused)"
                if (path / "cifar-10-batches-py").exists() or (path / "data_batch_1").exists() else "")
        raise DatasetError(f"CIFAR-10 binary batches data_batch_1..5.bin not found in {path}{hint}; "
                           "download the binary version, cifar-10-binary.tar.gz, and extract it there",
                           field=FIELD)
    records = []
    for batch in batches:
        data = np.fromfile(batch, dtype=np.uint8)
        if data.size == 0 or data.size % CIFAR_RECORD:
            raise DatasetError(f"{batch} is not a CIFAR-10 binary batch ({data.size} bytes)", field=FIELD)
        records.append(data.reshape(-1, CIFAR_RECORD))
    table = np.concatenate(records)
    labels = table[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"label {labels.max()} in {folder}: not CIFAR-10 (10 classes)", field=FIELD)
    chosen = balanced_indices(labels, max_samples, seed)
    images = table[chosen, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return images, labels[chosen]


def conll2003_local(path: Path, max_samples: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """CoNLL-2003 sentences labelled by their majority entity type (LOC 0, MISC 1, ORG 2, PER 3).

    `path` is a CoNLL file (`token POS chunk NER` per line, blank lines between sentences) or a
    directory holding `train.txt` or `eng.train`. Sentences without entities are left out; ties
    go to the type that appears first.
    """
    path = Path(path)
    file = next((f for f in (path / "train.txt", path / "eng.train") if f.is_file()), None) if path.is_dir() else path
    if file is None or not file.is_file():
        raise DatasetError(f"CoNLL-2003 training file not found at {path}; expected a CoNLL file or a "
                           "directory with train.txt or eng.train", field=FIELD)
    sentences, labels = [], []
    for tokens, tags in _conll_sentences(file):
        types = [tag.split("-", 1)[1] for tag in tags if tag != "O" and "-" in tag]
        counts = Counter(t for t in types if t in CONLL_TYPES)
        if counts:
            top = max(counts.values())
            labels.append(CONLL_TYPES.index(next(t for t in types if counts.get(t) == top)))
            sentences.append(" ".join(tokens))
    if not sentences:
        raise DatasetError(f"no sentence with a named entity in {file}", field=FIELD)
    labels_array = np.asarray(labels, dtype=np.int64)
    chosen = balanced_indices(labels_array, max_samples, seed)
    return [sentences[i] for i in chosen], labels_array[chosen]


def _conll_sentences(file: Path):
    tokens: list[str] = []
    tags: list[str] = []
    with open(file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    yield tokens, tags
                tokens, tags = [], []
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield tokens, tags
