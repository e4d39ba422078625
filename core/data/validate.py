"""The dataset validator: an uploaded `.npz` either becomes validated arrays or a DatasetError.

Numpy only (the API imports this; it must not pull in torch). Validation runs in two passes:
first the zip directory and every member's `.npy` header (dtype, shape, declared size — nothing
is decompressed, so a zip bomb or a pickled array is refused before it costs anything), then the
values (finite, label ranges, task compatibility). The second pass streams each member from the
zip, `SLICE_BYTES` at a time, so `validate_npz` never holds an input array: its memory is a few
slices plus the targets, whatever the size of x. `load_npz` runs the very same pass and also keeps
the inputs, filling its float32 arrays slice by slice.

Layout: `x`, `y` and the optional pairs `x_val`/`y_val`, `x_test`/`y_test`. `x` is (N, C, L) for
1D inputs or (N, C, H, W) for 2D. Targets are stored canonically by `load_npz`: class labels
(N,) int64, scalar targets (N,) float32, multilabel (N, K) float32, dense targets (N, *spatial)
float32 (a singleton channel, (N, 1, L) or (N, 1, H, W), is dropped; so is the 1 of (N, 1)).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.config import TaskType
from core.errors import DatasetError

PAIRS = {"x": "y", "x_val": "y_val", "x_test": "y_test"}
KEYS = tuple(k for pair in PAIRS.items() for k in pair)
SPLIT_OF = {"x": "train", "x_val": "val", "x_test": "test"}
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float
_DENSE = (TaskType.dense_binary.value, TaskType.dense_regression.value)
SLICE_BYTES = 16 * 1024**2  # values are read this much at a time (rounded down to whole elements)
MAX_HEADER_BYTES = 10_000  # numpy's own default limit on a .npy header
MAX_DIRECTORY_BYTES = 64 * 1024  # a zip directory of six members needs well under 1 KiB


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
    fortran_order: bool = False


def validate_npz(path: str | Path, limits: DatasetLimits = DatasetLimits(),
                 task: str | None = None) -> DatasetInfo:
    """Check an uploaded `.npz` completely; return what it holds or raise DatasetError. The inputs
    are checked as they stream from the archive and never held: memory stays at a few slices."""
    return _check_npz(Path(path), limits, task, keep_inputs=False)[1]


def load_npz(path: str | Path, limits: DatasetLimits = DatasetLimits(),
             task: str | None = None) -> tuple[dict[str, np.ndarray], DatasetInfo]:
    """Validate and load: x arrays as float32, targets in the canonical form of the task."""
    return _check_npz(Path(path), limits, task, keep_inputs=True)


def _check_npz(path: Path, limits: DatasetLimits, task: str | None,
               keep_inputs: bool) -> tuple[dict[str, np.ndarray], DatasetInfo]:
    task = _check_task_name(task)
    headers = read_headers(path, limits)
    _check_layout(headers, limits)
    arrays = _read_values(path, headers, keep_inputs)
    shapes = {key: header.shape for key, header in headers.items()}
    task = task or _infer_task(shapes["x"], arrays["y"])
    num_classes = None
    for x_key, y_key in PAIRS.items():
        if x_key in headers:
            with np.errstate(over="ignore"):  # float64 targets beyond float32 become Inf: reported
                arrays[y_key] = _numeric(y_key, _targets(y_key, arrays[y_key], shapes[x_key], task))
    if task == TaskType.classification.value:
        num_classes = _check_classes(arrays, limits)
    elif task == TaskType.multilabel.value:
        num_classes = int(arrays["y"].shape[1])
    info = DatasetInfo(
        samples=int(sum(shapes[k][0] for k in PAIRS if k in shapes)),
        input_shape=shapes["x"][1:],
        task_type=task,
        num_classes=num_classes,
        target_shape=tuple(int(d) for d in arrays["y"].shape[1:]),
        splits={SPLIT_OF[k]: shapes[k][0] for k in PAIRS if k in shapes},
    )
    return arrays, info


def infer_task(x: np.ndarray, y: np.ndarray) -> str:
    """The task a target array implies for inputs `x` (see the module docstring for the rules)."""
    return _infer_task(x.shape, y)


def _infer_task(x_shape: tuple[int, ...], y: np.ndarray) -> str:
    if _dense_shape(x_shape, y) is not None:
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
        f"cannot tell the task from y of shape {_shape(y.shape)} and x of shape {_shape(x_shape)}: "
        "expected (N,) labels or targets, (N, K) 0/1 multilabel, or x's spatial dims "
        f"{_shape(x_shape[2:])} for dense targets; non-binary (N, K) targets are not supported",
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
        _check_directory_size(path)
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


def _check_directory_size(path: Path) -> None:
    """Refuse an archive with more members than a dataset has before zipfile reads its directory:
    zipfile builds an object per entry, and a 17 MB upload of 200k empty members took 1.5 s and
    110 MB to open (a 2 GB one: minutes and gigabytes). zipfile parses the directory by its byte
    size, not by the member count, so both are bounded. `_EndRecData` is zipfile's own reader of
    the end record (private, unchanged since Python 2)."""
    with open(path, "rb") as handle:
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end is None:
        return  # not a zip at all: ZipFile says so
    members = int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    directory = int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]
    if members > len(KEYS) or directory > MAX_DIRECTORY_BYTES:
        raise DatasetError(f"the archive declares {members} members in a {directory}-byte directory; a dataset "
                           f"has at most {len(KEYS)} ({', '.join(KEYS)})", field="file")


def _key_of(name: str) -> str:
    if not name.endswith(".npy"):
        raise DatasetError(f"member {name!r} is not a .npy array; expected {', '.join(KEYS)}",
                           field=name)
    key = name[: -len(".npy")]
    if key not in KEYS:
        raise DatasetError(f"unknown array {key!r}; expected x, y and optionally "
                           "x_val/y_val, x_test/y_test", field=key)
    return key


class _HeaderReader:
    """A member seen through reads of at most MAX_HEADER_BYTES. numpy reads a `.npy` header whole
    before checking its size, so a header declaring 4 GiB (a few MiB deflated) would be inflated
    into memory; this refuses such a read before it starts."""

    def __init__(self, member: IO[bytes]) -> None:
        self._member = member

    def read(self, size: int) -> bytes:
        if not 0 <= size <= MAX_HEADER_BYTES:
            raise ValueError(f"the .npy header declares {size} bytes; at most {MAX_HEADER_BYTES} are read")
        return self._member.read(size)


def _parse_npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, fortran_order, dtype) from the start of a `.npy` member, which is left at the data."""
    capped: Any = _HeaderReader(member)
    version = np.lib.format.read_magic(capped)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(capped, max_header_size=MAX_HEADER_BYTES)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(capped, max_header_size=MAX_HEADER_BYTES)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, limits: DatasetLimits) -> ArrayHeader:
    try:
        with zf.open(info) as member:
            shape, fortran_order, dtype = _parse_npy_header(member)
            header_bytes = member.tell()
    except DatasetError:
        raise
    except (ValueError, SyntaxError, TypeError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"not a valid .npy array: {exc}", field=key) from None
    except (NotImplementedError, RuntimeError):  # zipfile's answers to an unknown compression method, encryption
        raise DatasetError("the member is encrypted or compressed with an unsupported method; "
                           "store it plain or deflated", field=key) from None
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
    return ArrayHeader(tuple(int(d) for d in shape), dtype, bool(fortran_order))


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


def _read_values(path: Path, headers: dict[str, ArrayHeader], keep_inputs: bool) -> dict[str, np.ndarray]:
    """Every member's values, streamed: inputs are checked slice by slice (and kept as float32 only
    when `keep_inputs`), targets are kept whole in their stored dtype (they are small next to x).
    As when every array was loaded first: a member that cannot be read is reported before any
    bad value, and bad values member by member, in archive order."""
    arrays: dict[str, np.ndarray] = {}
    inputs: dict[str, _InputCheck] = {}
    with zipfile.ZipFile(path) as zf:
        for key, header in headers.items():
            if key in PAIRS:
                check = inputs[key] = _InputCheck()
                kept = _empty_like(header, np.float32) if keep_inputs else None
                _stream(zf, key, header, check.add, kept)
                if kept is not None:
                    arrays[key] = np.ascontiguousarray(kept)
            else:
                arrays[key] = _empty_like(header, header.dtype)
                _stream(zf, key, header, None, arrays[key])
    for key in headers:
        if key in PAIRS:
            inputs[key].check(key)
        else:
            _numeric(key, arrays[key])
    return arrays


def _empty_like(header: ArrayHeader, dtype: Any) -> np.ndarray:
    return np.empty(header.shape, dtype, order="F" if header.fortran_order else "C")


def _stream(zf: zipfile.ZipFile, key: str, header: ArrayHeader,
            check: Callable[[np.ndarray], np.ndarray] | None, out: np.ndarray | None) -> None:
    """Read member `key`'s data SLICE_BYTES (whole elements) at a time, in storage order; pass each
    slice through `check` (which returns it in the dtype to keep) and copy it into `out` if given."""
    itemsize = header.dtype.itemsize
    step = max(1, SLICE_BYTES // itemsize) * itemsize
    left = math.prod(header.shape) * itemsize
    flat = None if out is None else out.reshape(-1, order="A")  # a view: C or F, as stored
    done = 0
    try:
        with zf.open(f"{key}.npy") as member:
            _parse_npy_header(member)
            while left:
                data = member.read(min(step, left))
                if len(data) != min(step, left):
                    raise EOFError("the array data ends early")
                left -= len(data)
                values = np.frombuffer(data, header.dtype)
                if check is not None:
                    values = check(values)
                if flat is not None:
                    flat[done:done + values.size] = values
                done += values.size
            member.read(1)  # at the end: the zip checks the member's CRC
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"cannot read the array data: {exc}", field=key) from None


@dataclass
class _NonFinite:
    """NaN and Inf counts of float values, added up slice by slice."""

    bad: int = 0
    nan: int = 0

    def add(self, values: np.ndarray) -> None:
        if values.dtype.kind == "f":
            bad = values.size - int(np.count_nonzero(np.isfinite(values)))
            if bad:
                self.bad += bad
                self.nan += int(np.count_nonzero(np.isnan(values)))

    def check(self, key: str) -> None:
        if self.bad:
            raise DatasetError(f"{self.bad} non-finite value(s) ({self.nan} NaN, {self.bad - self.nan} Inf)",
                               field=key)


@dataclass
class _InputCheck:
    """An input array must be finite in its stored dtype and still finite as float32."""

    stored: _NonFinite = field(default_factory=_NonFinite)
    as_float32: _NonFinite = field(default_factory=_NonFinite)

    def add(self, values: np.ndarray) -> np.ndarray:
        if values.dtype.kind == "f" and values.dtype.itemsize > 4:
            self.stored.add(values)
            with np.errstate(over="ignore"):  # overflow becomes Inf, which as_float32 then counts
                values = values.astype(np.float32)
        self.as_float32.add(values)  # bool and int values are always finite as float32
        return values

    def check(self, key: str) -> None:
        self.stored.check(key)  # name NaN/Inf in the source before overflow adds its own
        self.as_float32.check(key)


def _numeric(key: str, array: np.ndarray) -> np.ndarray:
    counts = _NonFinite()
    counts.add(array)
    counts.check(key)
    return array


def _check_task_name(task: str | None) -> str | None:
    if task is None:
        return None
    try:
        return TaskType(task).value
    except ValueError:
        raise DatasetError(f"unknown task {task!r}; expected one of "
                           f"{', '.join(t.value for t in TaskType)}", field="task") from None


def _dense_shape(x_shape: tuple[int, ...], y: np.ndarray) -> tuple[int, ...] | None:
    """y's per-sample shape with a singleton channel dropped, when it matches x's spatial dims."""
    spatial = tuple(x_shape[2:])
    per_sample = tuple(y.shape[1:])
    if per_sample == spatial:
        return spatial
    if per_sample == (1, *spatial):
        return spatial
    return None


def _is_binary(y: np.ndarray) -> bool:
    return y.dtype.kind == "b" or bool(np.all((y == 0) | (y == 1)))


def _targets(key: str, y: np.ndarray, x_shape: tuple[int, ...], task: str) -> np.ndarray:
    """Check `y` fits `task` (for inputs of shape `x_shape`) and return it in canonical form."""
    n = y.shape[0]
    if task in _DENSE:
        spatial = _dense_shape(x_shape, y)
        if spatial is None:
            raise DatasetError(f"{task} needs targets shaped like x's spatial dims: (N, "
                               f"{', '.join(map(str, x_shape[2:]))}); got {_shape(y.shape)}", field=key)
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
