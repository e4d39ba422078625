"""The dataset validator: an uploaded `.npz` either becomes validated arrays or a DatasetError.

Numpy only (the API imports this; it must not pull in torch). Validation runs in two passes:
first the zip directory and every member's `.npy` header (dtype, shape, declared size — nothing
is decompressed, so a zip bomb or a pickled array is refused before it costs anything), then the
values (finite, label ranges, task compatibility). The second pass streams each member from the
zip, `SLICE_BYTES` at a time, so `validate_npz` never holds an array, inputs or targets: its memory
is a few slices, whatever the sizes an archive declares. What the archive may make the server
inflate at all is bounded first, from the headers: per array (`max_elements`), per target sample
(one value, `max_classes` columns or x's spatial dims) and in all, against the upload's own size
(`max_expansion`), so a small deflated upload cannot declare gigabytes. `load_npz` runs the very
same pass and also keeps the arrays, filling them slice by slice.

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
    max_classes: int = 10_000  # class labels, or columns of multilabel targets
    max_expansion: int = 100
    """Inflated bytes an archive may declare per byte of upload, once past `free_inflated_bytes`:
    real arrays deflate a few times at most, a zip bomb about 1000 times."""
    free_inflated_bytes: int = 256 * 1024**2

    def max_inflated_bytes(self, file_bytes: int) -> int:
        return max(self.free_inflated_bytes, self.max_expansion * file_bytes)


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
    _check_inflation(headers, path.stat().st_size, limits)
    arrays, targets = _read_values(path, headers, limits, keep_inputs)
    shapes = {key: header.shape for key, header in headers.items()}
    y = headers["y"]
    task = task or _infer_task(shapes["x"], y.shape, y.dtype, targets["y"].binary)
    for x_key, y_key in PAIRS.items():
        if x_key in headers:
            _check_targets(y_key, targets[y_key], shapes[y_key], shapes["x"], task, limits)
    target_shape = _target_shape(shapes["x"], y.shape, task)
    if keep_inputs:
        for y_key in targets:
            arrays[y_key] = _canonical(arrays[y_key], target_shape, task)
    num_classes = None
    if task == TaskType.classification.value:
        num_classes = _check_classes(targets, limits)
    elif task == TaskType.multilabel.value:
        num_classes = target_shape[0]
    info = DatasetInfo(
        samples=int(sum(shapes[k][0] for k in PAIRS if k in shapes)),
        input_shape=shapes["x"][1:],
        task_type=task,
        num_classes=num_classes,
        target_shape=target_shape,
        splits={SPLIT_OF[k]: shapes[k][0] for k in PAIRS if k in shapes},
    )
    return arrays, info


def infer_task(x: np.ndarray, y: np.ndarray) -> str:
    """The task a target array implies for inputs `x` (see the module docstring for the rules)."""
    return _infer_task(x.shape, y.shape, y.dtype, _is_binary(y))


def _infer_task(x_shape: tuple[int, ...], y_shape: tuple[int, ...], y_dtype: np.dtype, binary: bool) -> str:
    """The task from y's shape and dtype and whether all its values are 0 or 1."""
    if _dense_shape(x_shape, y_shape) is not None:
        return TaskType.dense_binary.value if binary else TaskType.dense_regression.value
    if _one_per_sample(y_shape):
        if y_dtype.kind in "biu":
            return TaskType.classification.value
        return TaskType.scalar_regression.value
    if len(y_shape) == 2 and binary:
        return TaskType.multilabel.value
    raise DatasetError(
        f"cannot tell the task from y of shape {_shape(y_shape)} and x of shape {_shape(x_shape)}: "
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


def _check_inflation(headers: dict[str, ArrayHeader], file_bytes: int, limits: DatasetLimits) -> None:
    """Refuse an archive that declares far more bytes than an upload of its size can honestly hold
    (each member holds what its header declares, checked already): inflating them costs time even
    when memory stays bounded. The largest member is named, as the one to look at."""
    inflated = {key: math.prod(header.shape) * header.dtype.itemsize for key, header in headers.items()}
    total, allowed = sum(inflated.values()), limits.max_inflated_bytes(file_bytes)
    if total > allowed:
        largest = max(inflated, key=inflated.__getitem__)
        raise DatasetError(f"the archive declares {total} bytes of arrays ({largest}: {inflated[largest]}) in a "
                           f"{file_bytes}-byte upload; at most {allowed} are accepted ({limits.max_expansion} "
                           f"per byte uploaded past {limits.free_inflated_bytes})", field=largest)


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
    _check_target_size(headers["y"].shape, x, limits)


def _check_target_size(y_shape: tuple[int, ...], x_shape: tuple[int, ...], limits: DatasetLimits) -> None:
    """From the headers: a sample's target is one value, a row of at most `max_classes` 0/1 columns,
    or x's spatial dims (dense). Anything larger fits no task, so it is refused before it is read."""
    per_sample, spatial = math.prod(y_shape[1:]), math.prod(x_shape[2:])
    if per_sample > max(limits.max_classes, spatial):
        raise DatasetError(f"y has {per_sample} values per sample (shape {_shape(y_shape)}); a target is one value, "
                           f"at most {limits.max_classes} multilabel columns, or x's spatial dims "
                           f"{_shape(x_shape[2:])}", field="y")


def _read_values(path: Path, headers: dict[str, ArrayHeader], limits: DatasetLimits,
                 keep: bool) -> tuple[dict[str, np.ndarray], dict[str, _TargetCheck]]:
    """Every member's values, streamed and checked slice by slice; kept only when `keep` (inputs as
    float32, targets in their stored dtype). Returns the kept arrays and what the target checks need.
    As when every array was loaded first: a member that cannot be read is reported before any bad
    value, and non-finite values member by member, in archive order."""
    arrays: dict[str, np.ndarray] = {}
    checks: dict[str, _InputCheck | _TargetCheck] = {}
    with zipfile.ZipFile(path) as zf:
        for key, header in headers.items():
            check: _InputCheck | _TargetCheck
            if key in PAIRS:
                check = _InputCheck()
                kept = _empty_like(header, np.float32) if keep else None
            else:
                check = _TargetCheck(count_classes=key == "y", max_classes=limits.max_classes)
                kept = _empty_like(header, header.dtype) if keep else None
            checks[key] = check
            _stream(zf, key, header, check.add, kept)
            if kept is not None:
                arrays[key] = np.ascontiguousarray(kept) if key in PAIRS else kept
    for key, check in checks.items():
        check.check(key)
    return arrays, {key: check for key, check in checks.items() if isinstance(check, _TargetCheck)}


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


@dataclass
class _TargetCheck:
    """What the target checks need, gathered slice by slice so no target is held whole: finiteness
    (stored and as float32), whether every value is 0 or 1, fractional values, the range, and for
    the training labels the count of each class."""

    count_classes: bool
    max_classes: int
    stored: _NonFinite = field(default_factory=_NonFinite)
    as_float32: _NonFinite = field(default_factory=_NonFinite)  # float64 values past float32's range
    binary: bool = True
    fractional: int = 0
    low: float = math.inf
    high: float = -math.inf
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    countable: bool = True  # every slice held labels in 0..max_classes-1 (else an earlier check fails)

    def add(self, values: np.ndarray) -> np.ndarray:
        self.stored.add(values)
        if values.dtype.kind == "f" and values.dtype.itemsize > 4:
            with np.errstate(over="ignore"):
                self.as_float32.add(values.astype(np.float32))
        if values.dtype.kind != "b":
            self.binary = self.binary and bool(np.all((values == 0) | (values == 1)))
        fractional = 0
        if values.dtype.kind == "f":
            fractional = values.size - int(np.count_nonzero(values == np.round(values)))  # NaN counts too
            self.fractional += fractional
        low, high = values.min().item(), values.max().item()
        self.low, self.high = min(self.low, low), max(self.high, high)
        if self.count_classes:
            self._count(values, fractional == 0 and 0 <= low and high < self.max_classes)
        return values

    def _count(self, values: np.ndarray, countable: bool) -> None:
        self.countable = self.countable and countable
        if self.countable:
            counts = np.bincount(values.astype(np.int64))
            if counts.size > self.counts.size:
                self.counts = np.pad(self.counts, (0, counts.size - self.counts.size))
            self.counts[:counts.size] += counts

    def check(self, key: str) -> None:
        """Non-finite values as stored; overflow to float32 is checked with the task (labels are int64)."""
        self.stored.check(key)


def _check_task_name(task: str | None) -> str | None:
    if task is None:
        return None
    try:
        return TaskType(task).value
    except ValueError:
        raise DatasetError(f"unknown task {task!r}; expected one of "
                           f"{', '.join(t.value for t in TaskType)}", field="task") from None


def _dense_shape(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """y's per-sample shape with a singleton channel dropped, when it matches x's spatial dims."""
    spatial = tuple(x_shape[2:])
    per_sample = tuple(y_shape[1:])
    if per_sample == spatial:
        return spatial
    if per_sample == (1, *spatial):
        return spatial
    return None


def _one_per_sample(y_shape: tuple[int, ...]) -> bool:
    return len(y_shape) == 1 or (len(y_shape) == 2 and y_shape[1] == 1)


def _is_binary(y: np.ndarray) -> bool:
    return y.dtype.kind == "b" or bool(np.all((y == 0) | (y == 1)))


def _check_targets(key: str, check: _TargetCheck, y_shape: tuple[int, ...], x_shape: tuple[int, ...],
                   task: str, limits: DatasetLimits) -> None:
    """Check that targets of shape `y_shape` (values summed up in `check`) fit `task` for inputs of
    shape `x_shape`; the class labels' own rules are `_check_classes`."""
    if task in _DENSE:
        if _dense_shape(x_shape, y_shape) is None:
            raise DatasetError(f"{task} needs targets shaped like x's spatial dims: (N, "
                               f"{', '.join(map(str, x_shape[2:]))}); got {_shape(y_shape)}", field=key)
        if task == TaskType.dense_binary.value and not check.binary:
            raise DatasetError("dense_binary targets must be 0 or 1", field=key)
    elif task == TaskType.multilabel.value:
        if len(y_shape) != 2:
            raise DatasetError(f"multilabel targets must be (N, K); got {_shape(y_shape)}", field=key)
        if not check.binary:
            raise DatasetError("multilabel targets must be 0 or 1", field=key)
        if y_shape[1] > limits.max_classes:
            raise DatasetError(f"{y_shape[1]} multilabel columns; the limit is {limits.max_classes}", field=key)
    elif not _one_per_sample(y_shape):
        raise DatasetError(f"{task} needs one target per sample, shape (N,); got {_shape(y_shape)}", field=key)
    elif task == TaskType.classification.value:
        if check.fractional:
            raise DatasetError(f"classification needs integer labels; {check.fractional} label(s) are "
                               "fractional floats", field=key)
        if check.low < 0:
            raise DatasetError(f"labels must be non-negative; found {int(check.low)}", field=key)
        return  # stored as int64: float32 overflow does not apply
    check.as_float32.check(key)  # stored as float32: float64 values past its range became Inf


def _target_shape(x_shape: tuple[int, ...], y_shape: tuple[int, ...], task: str) -> tuple[int, ...]:
    """The per-sample shape of canonical targets (see the module docstring) of checked targets."""
    if task in _DENSE:
        spatial = _dense_shape(x_shape, y_shape)
        assert spatial is not None, "checked by _check_targets"
        return spatial
    if task == TaskType.multilabel.value:
        return tuple(y_shape[1:])
    return ()


def _canonical(y: np.ndarray, target_shape: tuple[int, ...], task: str) -> np.ndarray:
    dtype = np.int64 if task == TaskType.classification.value else np.float32
    return np.ascontiguousarray(y.reshape(len(y), *target_shape), dtype=dtype)


def _check_classes(targets: dict[str, _TargetCheck], limits: DatasetLimits) -> int:
    """Train labels are 0..K-1 with every class present; val/test labels lie within that range."""
    y = targets["y"]
    num_classes = int(y.high) + 1
    if num_classes > limits.max_classes:
        raise DatasetError(f"labels go up to {num_classes - 1}; the limit is {limits.max_classes} classes",
                           field="y")
    assert y.countable, "non-integer, negative or too large labels were refused above"
    present = np.pad(y.counts, (0, num_classes - y.counts.size))
    missing = np.flatnonzero(present == 0)
    if missing.size:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if missing.size > 10 else "")
        raise DatasetError(f"labels must be 0..K-1 with every class present; {num_classes} classes "
                           f"but no sample of class {shown}", field="y")
    if num_classes < 2:
        raise DatasetError("classification needs at least two classes; y has one", field="y")
    for key in ("y_val", "y_test"):
        if key in targets and int(targets[key].high) >= num_classes:
            raise DatasetError(f"label {int(targets[key].high)} is outside the training classes "
                               f"0..{num_classes - 1}", field=key)
    return num_classes


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
