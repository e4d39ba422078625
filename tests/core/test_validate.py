"""The upload validator: every malformed file is a DatasetError naming the array; good files load."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_datasets import BAD_DATASETS, BAD_FOR_TASK, GOOD_DATASETS

from core.data import validate
from core.data.validate import DatasetLimits, infer_task, load_npz, validate_npz
from core.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "build", "field"), BAD_DATASETS, ids=[case[0] for case in BAD_DATASETS])
def test_bad_dataset_names_the_field(tmp_path, name, build, field):
    path = tmp_path / f"{name}.npz"
    build(path)
    with pytest.raises(DatasetError) as caught:
        validate_npz(path)
    assert caught.value.field == field, str(caught.value)
    assert caught.value.as_dict()["code"] == "invalid_dataset"


@pytest.mark.parametrize(("name", "build", "task", "field"), BAD_FOR_TASK, ids=[case[0] for case in BAD_FOR_TASK])
def test_data_incompatible_with_the_task(tmp_path, name, build, task, field):
    path = tmp_path / f"{name}.npz"
    build(path)
    with pytest.raises(DatasetError) as caught:
        validate_npz(path, task=task)
    assert caught.value.field == field, str(caught.value)


@pytest.mark.parametrize(("name", "build", "task"), GOOD_DATASETS, ids=[case[0] for case in GOOD_DATASETS])
def test_good_dataset_infers_the_task(tmp_path, name, build, task):
    path = tmp_path / f"{name}.npz"
    build(path)
    arrays, info = load_npz(path)
    assert info.task_type == task
    assert validate_npz(path, task=task) == info
    assert info.samples == sum(info.splits.values())
    assert info.input_shape == arrays["x"].shape[1:]
    assert info.target_shape == arrays["y"].shape[1:]
    for key, array in arrays.items():
        if key.startswith("x"):
            assert array.dtype == np.float32
        else:
            assert array.dtype == (np.int64 if task == "classification" else np.float32)
    json.dumps(info.as_dict())


def test_info_shapes_and_splits(tmp_path):
    path = tmp_path / "d.npz"
    x = np.zeros((10, 3, 4, 5), np.float64)
    np.savez(path, x=x, y=np.arange(10) % 4, x_val=x[:2], y_val=np.array([3, 0]), x_test=x[:3], y_test=np.zeros(3, int))
    info = validate_npz(path)
    assert info.as_dict() == {"samples": 15, "input_shape": [3, 4, 5], "task_type": "classification",
                              "num_classes": 4, "target_shape": [], "splits": {"train": 10, "val": 2, "test": 3}}


def test_integral_float_labels_are_classes_only_when_asked(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((6, 1, 3)), y=np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]))
    assert validate_npz(path).task_type == "scalar_regression"
    arrays, info = load_npz(path, task="classification")
    assert info.num_classes == 3 and arrays["y"].dtype == np.int64


def test_task_can_override_inference(tmp_path):
    """Binary (N, L) targets read as dense by default; a job may call them multilabel."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((6, 1, 4)), y=np.eye(6, 4))
    assert validate_npz(path).task_type == "dense_binary"
    assert validate_npz(path, task="multilabel").num_classes == 4
    assert validate_npz(path, task="dense_regression").target_shape == (4,)


def test_limits(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((10, 1, 3)), y=np.arange(10) % 5)
    with pytest.raises(DatasetError) as caught:
        validate_npz(path, DatasetLimits(max_samples=9))
    assert caught.value.field == "x"
    with pytest.raises(DatasetError) as caught:
        validate_npz(path, DatasetLimits(max_elements=29))
    assert caught.value.field == "x"
    with pytest.raises(DatasetError) as caught:
        validate_npz(path, DatasetLimits(max_classes=4))
    assert caught.value.field == "y"
    with pytest.raises(DatasetError) as caught:
        validate_npz(path, DatasetLimits(max_file_bytes=100))
    assert caught.value.field == "file"


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError) as caught:
        validate_npz(tmp_path / "absent.npz")
    assert caught.value.field == "file"


def test_float64_overflowing_float32_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((4, 1, 2), 1e300), y=np.arange(4) % 2)
    with pytest.raises(DatasetError) as caught:
        validate_npz(path)
    assert caught.value.field == "x" and "Inf" in caught.value.message


def test_infer_task_directly():
    x1, x2 = np.zeros((4, 2, 5)), np.zeros((4, 1, 3, 3))
    assert infer_task(x1, np.array([0, 1, 1, 0])) == "classification"
    assert infer_task(x1, np.array([0.1, 1, 1, 0])) == "scalar_regression"
    assert infer_task(x1, np.eye(4, 3)) == "multilabel"
    assert infer_task(x1, np.zeros((4, 5))) == "dense_binary"
    assert infer_task(x2, np.full((4, 1, 3, 3), 0.5)) == "dense_regression"
    with pytest.raises(DatasetError):
        infer_task(x1, np.zeros((4, 2, 5)) + 0.5)


@pytest.mark.parametrize("name", [case[0] for case in BAD_DATASETS + GOOD_DATASETS])
def test_tiny_slices_give_the_same_answers(tmp_path, monkeypatch, name):
    """Values are read in slices; cut every array into many (36 bytes: 4 float64, 9 float32, 36 uint8)."""
    build, expected = {case[0]: (case[1], case[-1]) for case in BAD_DATASETS + GOOD_DATASETS}[name]
    path = tmp_path / f"{name}.npz"
    build(path)
    try:
        whole = validate_npz(path)
    except DatasetError as exc:
        whole = exc.as_dict()
    monkeypatch.setattr(validate, "SLICE_BYTES", 36)
    try:
        sliced = validate_npz(path)
    except DatasetError as exc:
        sliced = exc.as_dict()
    assert sliced == whole
    assert (whole.task_type if isinstance(whole, validate.DatasetInfo) else whole["param"]) == expected


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_x_larger_than_a_slice(tmp_path, monkeypatch, order, save, dtype):
    """Many slices, C or Fortran order, stored or deflated: loads exactly, and a bad value in the last
    slice (in storage order) is found and counted with the rest."""
    monkeypatch.setattr(validate, "SLICE_BYTES", 300)
    x = np.asarray(np.arange(30 * 3 * 50).reshape(30, 3, 50) % 251, dtype=dtype, order=order)
    assert x.nbytes > 10 * validate.SLICE_BYTES and x.flags[f"{order}_CONTIGUOUS"]
    y = np.arange(30) % 3
    save(tmp_path / "good.npz", x=x, y=y, x_test=x[:4], y_test=y[:4])
    arrays, info = load_npz(tmp_path / "good.npz")
    assert info.input_shape == (3, 50) and info.num_classes == 3
    for key in ("x", "x_test"):
        assert arrays[key].dtype == np.float32 and arrays[key].flags.c_contiguous
        np.testing.assert_array_equal(arrays[key], x[: len(arrays[key])].astype(np.float32))
    assert validate_npz(tmp_path / "good.npz") == info
    if dtype is np.uint8:
        return
    bad = x.copy(order=order)
    bad[29, 2, 49] = np.nan  # the last element in storage order, C or F
    bad[0, 0, 0] = np.inf
    save(tmp_path / "bad.npz", x=bad, y=y)
    with pytest.raises(DatasetError) as caught:
        validate_npz(tmp_path / "bad.npz")
    assert (caught.value.field, caught.value.message) == ("x", "2 non-finite value(s) (1 NaN, 1 Inf)")
    if dtype is np.float64:  # finite as float64, Inf as float32: only in the last slice
        bad = x.copy(order=order)
        bad[29, 2, 49] = 1e300
        save(tmp_path / "overflow.npz", x=bad, y=y)
        with pytest.raises(DatasetError) as caught:
            validate_npz(tmp_path / "overflow.npz")
        assert (caught.value.field, caught.value.message) == ("x", "1 non-finite value(s) (0 NaN, 1 Inf)")


PEAK_MEMORY = r"""
import json, sys, tracemalloc
from core.data.validate import load_npz, validate_npz
tracemalloc.start()
result = (validate_npz if sys.argv[1] == "validate" else load_npz)(sys.argv[2])
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "ok": bool(result)}))
"""


def _peak_mib(function: str, path: Path) -> float:
    """Peak traced allocation (numpy's included) of one call in a fresh interpreter, in MiB."""
    out = subprocess.run([sys.executable, "-c", PEAK_MEMORY, function, str(path)], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout
    return json.loads(out.splitlines()[-1])["peak"] / 1024**2


def test_validation_memory_does_not_grow_with_x(tmp_path):
    """A 200 MiB x is checked in ~16 MiB slices: validate_npz peaks far below the array's size. The
    same measurement of load_npz, which must hold x, shows it would catch a whole-array read."""
    path = tmp_path / "big.npz"
    rows, length = 200 * 1024**2 // (4 * 1024), 1024
    block = np.linspace(-1, 1, 512 * length, dtype=np.float32).tobytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f4", "fortran_order": False, "shape": (rows, 1, length)}
            np.lib.format.write_array_header_1_0(member, header)
            for _ in range(rows // 512):
                member.write(block)
        zf.writestr("y.npy", _npy_bytes(np.arange(rows) % 2))
    assert _peak_mib("validate", path) < 64
    assert _peak_mib("load", path) > 200


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("module", ["core.data.validate", "core.data"])
def test_validator_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"
