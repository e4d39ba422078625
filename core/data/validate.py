"""The dataset validator: an uploaded `.npz` either becomes validated arrays or a DatasetError.

Numpy only (the API imports this; it must not pull in torch). Validation runs in two passes:
first the zip directory and every member's `.npy` header (dtype, shape, declared size — nothing
is decompressed, so a zip bomb or a pickled array is refused before it costs anything), then the
values (finite, label ranges, task compatibility).

Layout: `x`, `y` and the optional pairs `x_val`/`y_val`, `x_test`/`y_test`. `x` is (N, C, L) for
1D inputs or (N, C, H, W) for 2D. Targets are stored canonically by `load_npz`: class labels
(N,) int64, scalar targets (N,) float32, multilabel (N, K) float32, dense targets (N, *spatial)
float32 (a singleton channel, (N, 1, L) or (N, 1, H, W), is dropped; so is the 1 of (N, 1)).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import TaskType
from core.errors import DatasetError

PAIRS = {"x": "y", "x_val": "y_val", "x_test": "y_test"}
KEYS = tuple(k for pair in PAIRS.items() for k in pair)
SPLIT_OF = {"x": "train", "x_val": "val", "x_test": "test"}
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float
_DENSE = (TaskType.dense_binary.value, TaskType.dense_regression.value)


@dataclass(frozen=True)
class DatasetLimits:
    max_file_bytes: int = 2 * 1024**3
    max_samples: int = 5_000_000
    max_elements: int = 2_000_000_000  # per array, decompressed
    max_classes: int = 100_000


@dataclass(frozen=True)
class DatasetInfo:
    samples: int
    input_shape: tuple[int, ...]
    task_type: str
    num_classes: int | None
    target_shape: tuple[int, ...]
    splits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["target_shape"] = list(self.target_shape)
        return data


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype


def validate_npz(path: str | Path, limits: DatasetLimits = DatasetLimits(),
                 task: str | None = None) -> DatasetInfo:
    """Check an uploaded `.npz` completely; return what it holds or raise DatasetError."""
    return load_npz(path, limits, task)[1]


def load_npz(path: str | Path, limits: DatasetLimits = DatasetLimits(),
             task: str | None = None) -> tuple[dict[str, np.ndarray], DatasetInfo]:
    """Validate and load: x arrays as float32, targets in the canonical form of the task."""
    path = Path(path)
    task = _check_task_name(task)
    headers = read_headers(path, limits)
    _check_layout(headers, limits)
    raw = _load_arrays(path, headers)
    arrays = {key: _as_float32(key, raw[key]) if key in PAIRS else _numeric(key, raw[key]) for key in raw}
    task = task or infer_task(arrays["x"], arrays["y"])
    num_classes = None
    for x_key, y_key in PAIRS.items():
        if x_key in arrays:
            with np.errstate(over="ignore"):  # float64 targets beyond float32 become Inf: reported
                arrays[y_key] = _numeric(y_key, _targets(y_key, arrays[y_key], arrays[x_key], task))
    if task == TaskType.classification.value:
        num_classes = _check_classes(arrays, limits)
    elif task == TaskType.multilabel.value:
        num_classes = int(arrays["y"].shape[1])
    info = DatasetInfo(
        samples=int(sum(arrays[k].shape[0] for k in PAIRS if k in arrays)),
        input_shape=tuple(int(d) for d in arrays["x"].shape[1:]),
        task_type=task,
        num_classes=num_classes,
        target_shape=tuple(int(d) for d in arrays["y"].shape[1:]),
        splits={SPLIT_OF[k]: int(arrays[k].shape[0]) for k in PAIRS if k in arrays},
    )
    return arrays, info


def infer_task(x: np.ndarray, y: np.ndarray) -> str:
    """The task a target array implies for inputs `x` (see the module docstring for the rules)."""
    if _dense_shape(x, y) is not None:
        return TaskType.dense_binary.value if _is_binary(y) else TaskType.dense_regression.value
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if y.dtype.kind in "biu":
            return TaskType.classification.value
        return TaskType.scalar_regression.value
    if y.ndim == 2 and _is_binary(y):
        return TaskType.multilabel.value
    raise DatasetError(
        f"cannot tell the task from y of shape {_shape(y.shape)} and x of shape {_shape(x.shape)}: "
        "expected (N,) labels or targets, (N, K) 0/1 multilabel, or x's spatial dims "
        f"{_shape(x.shape[2:])} for dense targets; non-binary (N, K) targets are not supported",
        field="y")


def read_headers(path: Path, limits: DatasetLimits = DatasetLimits()) -> dict[str, ArrayHeader]:
    """Each member's declared dtype and shape, checked against the limits; nothing decompressed."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"cannot read {path.name}: {exc.strerror}", field="file") from None
    if size == 0:
        raise DatasetError("the file is empty (0 bytes)", field="file")
    if size > limits.max_file_bytes:
        raise DatasetError(f"the file has {size} bytes; the limit is {limits.max_file_bytes}", field="file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            for name in names:
                if names.count(name) > 1:
                    raise DatasetError(f"member {name!r} appears twice in the archive", field="file")
            headers = {}
            for info in infos:
                key = _key_of(info.filename)
                headers[key] = _read_header(zf, info, key, limits)
            return headers
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"not a readable .npz (zip) archive: {exc}", field="file") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read the archive: {exc}", field="file") from None


def _key_of(name: str) -> str:
    if not name.endswith(".npy"):
        raise DatasetError(f"member {name!r} is not a .npy array; expected {', '.join(KEYS)}",
                           field=name)
    key = name[: -len(".npy")]
    if key not in KEYS:
        raise DatasetError(f"unknown array {key!r}; expected x, y and optionally "
                           "x_val/y_val, x_test/y_test", field=key)
    return key


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, limits: DatasetLimits) -> ArrayHeader:
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            header_bytes = member.tell()
    except DatasetError:
        raise
    except (ValueError, SyntaxError, TypeError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"not a valid .npy array: {exc}", field=key) from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise DatasetError("object arrays are refused (they need pickle); store a numeric dtype", field=key)
    if dtype.names is not None or dtype.subdtype is not None:
        raise DatasetError(f"structured dtype {dtype} is refused; store a plain numeric array", field=key)
    if dtype.kind not in NUMERIC_KINDS:
        raise DatasetError(f"dtype {dtype} is not numeric (bool, int or float)", field=key)
    elements = math.prod(int(d) for d in shape)
    if elements > limits.max_elements:
        raise DatasetError(f"declares shape {_shape(shape)} = {elements} elements; "
                           f"the limit is {limits.max_elements} per array", field=key)
    declared = header_bytes + elements * dtype.itemsize
    if info.file_size != declared:
        raise DatasetError(f"header declares shape {_shape(shape)} of {dtype} ({declared} bytes) "
                           f"but the member holds {info.file_size} bytes", field=key)
    return ArrayHeader(tuple(int(d) for d in shape), dtype)


def _check_layout(headers: dict[str, ArrayHeader], limits: DatasetLimits) -> None:
    """Keys, dims and lengths, from the headers alone."""
    for key in ("x", "y"):
        if key not in headers:
            raise DatasetError(f"the archive has no {key!r} array", field=key)
    for x_key, y_key in PAIRS.items():
        if (x_key in headers) != (y_key in headers):
            present, missing = (x_key, y_key) if x_key in headers else (y_key, x_key)
            raise DatasetError(f"{present} given without {missing}", field=missing)
    for key, header in headers.items():
        if 0 in header.shape or not header.shape:
            raise DatasetError(f"empty array (shape {_shape(header.shape)})", field=key)
    x = headers["x"].shape
    if len(x) not in (3, 4):
        raise DatasetError(f"x has shape {_shape(x)}; expected (N, C, L) for 1D inputs "
                           "or (N, C, H, W) for 2D", field="x")
    total = 0
    for x_key, y_key in PAIRS.items():
        if x_key not in headers:
            continue
        xs, ys = headers[x_key].shape, headers[y_key].shape
        if xs[1:] != x[1:]:
            raise DatasetError(f"per-sample shape {_shape(xs[1:])} differs from x's {_shape(x[1:])}",
                               field=x_key)
        if ys[1:] != headers["y"].shape[1:]:
            raise DatasetError(f"per-sample shape {_shape(ys[1:])} differs from y's "
                               f"{_shape(headers['y'].shape[1:])}", field=y_key)
        if xs[0] != ys[0]:
            raise DatasetError(f"{y_key} has {ys[0]} samples but {x_key} has {xs[0]}", field=y_key)
        total += xs[0]
    if total > limits.max_samples:
        raise DatasetError(f"{total} samples; the limit is {limits.max_samples}", field="x")


def _load_arrays(path: Path, headers: dict[str, ArrayHeader]) -> dict[str, np.ndarray]:
    arrays = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in headers:
            try:
                arrays[key] = npz[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DatasetError(f"cannot read the array data: {exc}", field=key) from None
    return arrays


def _numeric(key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            nan = int(np.count_nonzero(np.isnan(array)))
            raise DatasetError(f"{bad} non-finite value(s) ({nan} NaN, {bad - nan} Inf)", field=key)
    return array


def _as_float32(key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        _numeric(key, array)  # name NaN/Inf in the source before overflow adds its own
    with np.errstate(over="ignore"):  # overflow becomes Inf, which _numeric then reports
        return _numeric(key, np.ascontiguousarray(array, dtype=np.float32))


def _check_task_name(task: str | None) -> str | None:
    if task is None:
        return None
    try:
        return TaskType(task).value
    except ValueError:
        raise DatasetError(f"unknown task {task!r}; expected one of "
                           f"{', '.join(t.value for t in TaskType)}", field="task") from None


def _dense_shape(x: np.ndarray, y: np.ndarray) -> tuple[int, ...] | None:
    """y's per-sample shape with a singleton channel dropped, when it matches x's spatial dims."""
    spatial = tuple(x.shape[2:])
    per_sample = tuple(y.shape[1:])
    if per_sample == spatial:
        return spatial
    if per_sample == (1, *spatial):
        return spatial
    return None


def _is_binary(y: np.ndarray) -> bool:
    return y.dtype.kind == "b" or bool(np.all((y == 0) | (y == 1)))


def _targets(key: str, y: np.ndarray, x: np.ndarray, task: str) -> np.ndarray:
    """Check `y` fits `task` and return it in canonical form."""
    n = y.shape[0]
    if task in _DENSE:
        spatial = _dense_shape(x, y)
        if spatial is None:
            raise DatasetError(f"{task} needs targets shaped like x's spatial dims: (N, "
                               f"{', '.join(map(str, x.shape[2:]))}); got {_shape(y.shape)}", field=key)
        if task == TaskType.dense_binary.value and not _is_binary(y):
            raise DatasetError("dense_binary targets must be 0 or 1", field=key)
        return np.ascontiguousarray(y.reshape(n, *spatial), dtype=np.float32)
    if task == TaskType.multilabel.value:
        if y.ndim != 2:
            raise DatasetError(f"multilabel targets must be (N, K); got {_shape(y.shape)}", field=key)
        if not _is_binary(y):
            raise DatasetError("multilabel targets must be 0 or 1", field=key)
        return np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{task} needs one target per sample, shape (N,); got {_shape(y.shape)}", field=key)
    if task == TaskType.scalar_regression.value:
        return y.astype(np.float32)
    if y.dtype.kind == "f":
        fractional = int(np.count_nonzero(y != np.round(y)))
        if fractional:
            raise DatasetError(f"classification needs integer labels; {fractional} label(s) are "
                               "fractional floats", field=key)
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise DatasetError(f"labels must be non-negative; found {int(labels.min())}", field=key)
    return labels


def _check_classes(arrays: dict[str, np.ndarray], limits: DatasetLimits) -> int:
    """Train labels are 0..K-1 with every class present; val/test labels lie within that range."""
    y = arrays["y"]
    num_classes = int(y.max()) + 1
    if num_classes > limits.max_classes:
        raise DatasetError(f"labels go up to {num_classes - 1}; the limit is {limits.max_classes} classes",
                           field="y")
    present = np.bincount(y, minlength=num_classes)
    missing = np.flatnonzero(present == 0)
    if missing.size:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if missing.size > 10 else "")
        raise DatasetError(f"labels must be 0..K-1 with every class present; {num_classes} classes "
                           f"but no sample of class {shown}", field="y")
    if num_classes < 2:
        raise DatasetError("classification needs at least two classes; y has one", field="y")
    for key in ("y_val", "y_test"):
        if key in arrays and int(arrays[key].max()) >= num_classes:
            raise DatasetError(f"label {int(arrays[key].max())} is outside the training classes "
                               f"0..{num_classes - 1}", field=key)
    return num_classes


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
