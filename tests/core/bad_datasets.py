"""A corpus of malformed dataset uploads, shared by the validator tests and the API upload tests.

`BAD_DATASETS` is a list of `(name, build(path) -> None, expected_field)`: `build` writes the bad
file at `path`, and validating it must raise DatasetError whose `field` is `expected_field`.
`GOOD_DATASETS` holds `(name, build, task_type)` for the valid layouts of every task.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Builder = Callable[[Path], None]

_rng = np.random.default_rng(0)


def _x(n: int = 20, shape: tuple[int, ...] = (2, 16)) -> np.ndarray:
    return _rng.standard_normal((n, *shape)).astype(np.float32)


def _labels(n: int = 20, k: int = 3) -> np.ndarray:
    return np.arange(n) % k


def _save(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _saver(**arrays: np.ndarray) -> Builder:
    return lambda path: _save(path, **arrays)


def _good_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=_x(200), y=_labels(200))
    return buffer.getvalue()


def truncated_zip(path: Path) -> None:
    data = _good_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_bytes(path: Path) -> None:
    """Flip bytes inside x's compressed data: the zip directory still reads, the data does not."""
    data = bytearray(_good_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("x.npy")
    local_header = 30 + len(info.filename.encode()) + len(info.extra)
    start = info.header_offset + local_header
    for offset in range(start + info.compress_size // 2, start + info.compress_size - 8, 97):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def bad_crc(path: Path) -> None:
    """An uncompressed archive whose x data was altered after writing: the CRC no longer matches."""
    buffer = io.BytesIO()
    np.savez(buffer, x=_x(), y=_labels())
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("x.npy")
    data[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size - 3] ^= 0x55
    path.write_bytes(bytes(data))


def empty_file(path: Path) -> None:
    path.write_bytes(b"")


def not_a_zip(path: Path) -> None:
    path.write_text("x,y\n1,2\n")


def bare_npy(path: Path) -> None:
    np.save(path.with_suffix(".tmp.npy"), _x())
    path.write_bytes(path.with_suffix(".tmp.npy").read_bytes())
    path.with_suffix(".tmp.npy").unlink()


def _member(name: str, header: dict, payload: bytes) -> Builder:
    """A zip with a good `y` and a hand-made `.npy` member (any header, any bytes)."""

    def build(path: Path) -> None:
        npy = io.BytesIO()
        np.lib.format.write_array_header_1_0(npy, header)
        npy.write(payload)
        good_y = io.BytesIO()
        np.save(good_y, _labels())
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name, npy.getvalue())
            zf.writestr("y.npy", good_y.getvalue())

    return build


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _raw_members(members: dict[str, bytes]) -> Builder:
    def build(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, payload in members.items():
                zf.writestr(name, payload)

    return build


def garbage_member(path: Path) -> None:
    _raw_members({"x.npy": b"this is not an npy array at all", "y.npy": _npy(_labels())})(path)


def object_array(path: Path) -> None:
    x = np.empty((20, 2, 16), dtype=object)
    x[...] = 1.0
    with open(path, "wb") as handle:
        np.savez(handle, x=x, y=_labels())


def _good_members() -> dict[str, bytes]:
    return {"x.npy": _npy(_x()), "y.npy": _npy(_labels())}


def duplicate_member(path: Path) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        for name, payload in [*_good_members().items(), ("x.npy", _npy(_x()))]:
            zf.writestr(name, payload)


def _member_headers_rewritten(local: int, central: int, change: Callable[[int], int]) -> Builder:
    """A good archive whose 16-bit field at `local` in each local header and `central` in each
    directory entry is rewritten: still a well-formed zip, but its members cannot be opened."""

    def build(path: Path) -> None:
        _raw_members(_good_members())(path)
        data = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
            start = data.find(signature)
            while start >= 0:
                (value,) = struct.unpack_from("<H", data, start + offset)
                struct.pack_into("<H", data, start + offset, change(value))
                start = data.find(signature, start + 4)
        path.write_bytes(bytes(data))

    return build


def many_members(count: int, declared: int | None = None) -> Builder:
    """`count` empty members; `declared` rewrites the end record's member count (an archive that lies)."""

    def build(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as zf:
            for index in range(count):
                zf.writestr(f"{index}.npy", b"")
        if declared is not None:
            data = bytearray(path.read_bytes())
            struct.pack_into("<HH", data, data.rfind(b"PK\x05\x06") + 8, declared, declared)
            path.write_bytes(bytes(data))

    return build


def npy_header_bomb(inflated: int) -> Builder:
    """x.npy declares a 4 GiB header (.npy format 2.0) and holds `inflated` bytes of spaces, which
    deflate about 1000:1: numpy alone would inflate it all before looking at the header's size."""

    def build(path: Path) -> None:
        block = b" " * 2**20
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            with zf.open("x.npy", "w", force_zip64=True) as member:
                member.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1))
                for _ in range(inflated // len(block)):
                    member.write(block)
            zf.writestr("y.npy", _npy(_labels()))

    return build


def zeros_archive(members: dict[str, tuple[str, tuple[int, ...]]]) -> Builder:
    """An archive of all-zero members, `{name: (descr, shape)}`, streamed through deflate (level 1, the
    fastest: still ~230:1 on zeros). Zeros are valid values of every dtype, so only the declared
    sizes can make such an upload wrong: a few MB that declare hundreds of MB."""

    def build(path: Path) -> None:
        block = bytes(16 * 2**20)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, (descr, shape) in members.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, {"descr": descr, "fortran_order": False,
                                                                  "shape": shape})
                    left = int(np.prod(shape)) * np.dtype(descr).itemsize
                    while left:
                        member.write(block[:min(left, len(block))])
                        left -= min(left, len(block))

    return build


def _with_extra(**extra: np.ndarray) -> Builder:
    return _saver(x=_x(), y=_labels(), **extra)


def _nan() -> np.ndarray:
    x = _x()
    x[3, 0, 5] = np.nan
    x[4, 1, 2] = np.nan
    return x


def _inf() -> np.ndarray:
    x = _x()
    x[0, 0, 0] = np.inf
    return x


BAD_DATASETS: list[tuple[str, Builder, str]] = [
    ("truncated_zip", truncated_zip, "file"),
    ("corrupt_bytes", corrupt_bytes, "x"),
    ("bad_crc", bad_crc, "x"),
    ("empty_file", empty_file, "file"),
    ("not_a_zip", not_a_zip, "file"),
    ("bare_npy_not_npz", bare_npy, "file"),
    ("object_array", object_array, "x"),
    ("pickle_header", _member("x.npy", {"descr": "|O", "fortran_order": False, "shape": (20, 2, 16)},
                              b"\x80\x04N."), "x"),
    ("structured_dtype", _saver(x=np.zeros((20, 2, 16), dtype=[("a", "<f4"), ("b", "<i4")]), y=_labels()), "x"),
    ("string_dtype", _saver(x=np.full((20, 2, 16), "a"), y=_labels()), "x"),
    ("complex_dtype", _saver(x=_x().astype(np.complex64), y=_labels()), "x"),
    ("nan_in_x", _saver(x=_nan(), y=_labels()), "x"),
    ("inf_in_x", _saver(x=_inf(), y=_labels()), "x"),
    ("nan_in_y_test", _with_extra(x_test=_x(5), y_test=np.array([0.5, np.nan, 1, 2, 3])), "y_test"),
    ("inf_in_regression_y", _saver(x=_x(), y=np.r_[np.inf, np.zeros(19)]), "y"),
    ("mismatched_lengths", _saver(x=_x(20), y=_labels(19)), "y"),
    ("mismatched_test_lengths", _with_extra(x_test=_x(6), y_test=_labels(5)), "y_test"),
    ("empty_x", _saver(x=np.zeros((0, 2, 16), np.float32), y=np.zeros(0, np.int64)), "x"),
    ("empty_channel_dim", _saver(x=np.zeros((20, 0, 16), np.float32), y=_labels()), "x"),
    ("negative_labels", _saver(x=_x(), y=_labels() - 1), "y"),
    ("label_gap_in_train", _saver(x=_x(), y=(_labels(k=2) * 2)), "y"),
    ("single_class", _saver(x=_x(), y=np.zeros(20, np.int64)), "y"),
    ("test_label_out_of_range", _with_extra(x_test=_x(4), y_test=np.array([0, 1, 2, 3])), "y_test"),
    ("val_label_negative", _with_extra(x_val=_x(4), y_val=np.array([0, 1, -1, 2])), "y_val"),
    ("x_1d", _saver(x=_rng.standard_normal(20).astype(np.float32), y=_labels()), "x"),
    ("x_2d", _saver(x=_rng.standard_normal((20, 16)).astype(np.float32), y=_labels()), "x"),
    ("x_5d", _saver(x=np.zeros((20, 1, 2, 2, 2), np.float32), y=_labels()), "x"),
    ("missing_x", _saver(y=_labels()), "x"),
    ("missing_y", _saver(x=_x()), "y"),
    ("unknown_key", _with_extra(labels=_labels()), "labels"),
    ("x_val_without_y_val", _with_extra(x_val=_x(4)), "y_val"),
    ("y_test_without_x_test", _with_extra(y_test=_labels(4)), "x_test"),
    ("zip_bomb_header", _member("x.npy", {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)},
                                b"\0" * 64), "x"),
    ("short_data_for_header", _member("x.npy", {"descr": "<f4", "fortran_order": False, "shape": (20, 2, 16)},
                                      b"\0" * 64), "x"),
    ("garbage_npy_member", garbage_member, "x"),
    ("member_not_npy", _raw_members({"x.npy": _npy(_x()), "y.npy": _npy(_labels()), "notes.txt": b"hi"}),
     "notes.txt"),
    ("x_test_sample_shape", _with_extra(x_test=_x(4, (2, 17)), y_test=_labels(4)), "x_test"),
    ("x_val_channel_mismatch", _with_extra(x_val=_x(4, (3, 16)), y_val=_labels(4)), "x_val"),
    ("y_test_sample_shape", _saver(x=_x(), y=np.ones((20, 16), np.float32) * 0.5,
                                   x_test=_x(4), y_test=np.ones((4, 15), np.float32)), "y_test"),
    ("non_binary_multi_output", _saver(x=_x(), y=_rng.standard_normal((20, 3))), "y"),
    ("zero_dim_x", _saver(x=np.float32(1.0), y=_labels()), "x"),
    ("datetime_dtype", _saver(x=np.zeros((20, 2, 16), "M8[s]"), y=_labels()), "x"),
    ("negative_dim_header", _member("x.npy", {"descr": "<f4", "fortran_order": False, "shape": (-1, 2, 16)},
                                    b"\0" * 128), "x"),
    ("npy_format_3", _raw_members({"x.npy": b"\x93NUMPY\x03\x00" + _npy(_x())[8:], "y.npy": _npy(_labels())}),
     "x"),
    ("npy_header_bomb", npy_header_bomb(64 * 2**20), "x"),
    ("label_beyond_class_limit", _saver(x=_x(), y=np.r_[np.arange(19), 10**6]), "y"),
    ("one_class_past_the_limit", _saver(x=np.zeros((10_001, 1, 1), np.float32), y=np.arange(10_001)), "y"),
    ("targets_wider_than_any_task", zeros_archive({"x": ("<f4", (2, 1, 16)), "y": ("<f8", (2, 10_001))}), "y"),
    ("duplicate_member", duplicate_member, "file"),
    ("unsupported_compression", _member_headers_rewritten(8, 10, lambda _: 99), "x"),
    ("encrypted_member", _member_headers_rewritten(6, 8, lambda flags: flags | 1), "x"),
    ("too_many_members", many_members(2000), "file"),
    ("member_count_lies", many_members(2000, declared=2), "file"),
]

# Files that are fine on their own but wrong for the task a job asks for: (name, build, task, field).
BAD_FOR_TASK: list[tuple[str, Builder, str, str]] = [
    ("fractional_float_labels_as_classes", _saver(x=_x(), y=_labels().astype(np.float32) + 0.5),
     "classification", "y"),
    ("float_test_labels_as_classes", _with_extra(x_test=_x(3), y_test=np.array([0.0, 1.5, 2.0])),
     "classification", "y_test"),
    ("scalar_targets_as_dense", _saver(x=_x(), y=_rng.standard_normal(20)), "dense_regression", "y"),
    ("real_targets_as_dense_binary", _saver(x=_x(), y=_rng.standard_normal((20, 16))), "dense_binary", "y"),
    ("real_targets_as_multilabel", _saver(x=_x(), y=_rng.standard_normal((20, 4))), "multilabel", "y"),
    ("dense_targets_as_classification", _saver(x=_x(), y=np.ones((20, 16))), "classification", "y"),
    ("unknown_task", _saver(x=_x(), y=_labels()), "segmentation", "task"),
    ("multilabel_past_class_limit", zeros_archive({"x": ("<f4", (2, 1, 10_001)), "y": ("|u1", (2, 10_001))}),
     "multilabel", "y"),
]


def _binary(shape: tuple[int, ...]) -> np.ndarray:
    return (_rng.random(shape) > 0.5).astype(np.float32)


# Valid uploads of every task: (name, build, inferred task_type).
GOOD_DATASETS: list[tuple[str, Builder, str]] = [
    ("classification_1d", _saver(x=_x(), y=_labels()), "classification"),
    ("classification_2d_uint8_x", _saver(x=_rng.integers(0, 255, (20, 3, 8, 8), dtype=np.uint8),
                                         y=_labels().astype(np.uint8)), "classification"),
    ("classification_bool_labels", _saver(x=_x(), y=_labels(k=2).astype(bool)), "classification"),
    ("classification_all_splits", _saver(x=_x(), y=_labels(), x_val=_x(4), y_val=np.array([0, 0, 1, 1]),
                                         x_test=_x(5), y_test=_labels(5)), "classification"),
    ("classification_column_labels", _saver(x=_x(), y=_labels()[:, None]), "classification"),
    ("integral_float_labels_are_regression", _saver(x=_x(), y=_labels().astype(np.float64)),
     "scalar_regression"),
    ("scalar_regression", _saver(x=_x(), y=_rng.standard_normal(20)), "scalar_regression"),
    ("multilabel", _saver(x=_x(), y=_binary((20, 5)), x_test=_x(3), y_test=_binary((3, 5))), "multilabel"),
    ("multilabel_int", _saver(x=_x(), y=_binary((20, 5)).astype(np.int64)), "multilabel"),
    ("dense_binary_1d", _saver(x=_x(), y=_binary((20, 16))), "dense_binary"),
    ("dense_binary_1d_channel", _saver(x=_x(), y=_binary((20, 1, 16))), "dense_binary"),
    ("dense_regression_1d", _saver(x=_x(), y=_rng.standard_normal((20, 16))), "dense_regression"),
    ("dense_regression_2d", _saver(x=_x(shape=(1, 6, 7)), y=_rng.standard_normal((20, 6, 7))),
     "dense_regression"),
    ("dense_regression_2d_channel", _saver(x=_x(shape=(2, 6, 7)), y=_rng.standard_normal((20, 1, 6, 7)),
                                           x_test=_x(2, (2, 6, 7)), y_test=np.zeros((2, 1, 6, 7))),
     "dense_regression"),
    ("dense_binary_2d", _saver(x=_x(shape=(1, 6, 7)), y=_binary((20, 6, 7)).astype(bool)), "dense_binary"),
]
