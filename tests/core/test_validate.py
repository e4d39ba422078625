"""The upload validator: every malformed file is a DatasetError naming the array; good files load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_datasets import BAD_DATASETS, BAD_FOR_TASK, GOOD_DATASETS

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


@pytest.mark.parametrize("module", ["core.data.validate", "core.data"])
def test_validator_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"
