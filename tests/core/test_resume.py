"""Exact resume: stop after a checkpoint, resume, and land on the same weights as an uninterrupted run."""

import pytest

import core
from core.config import parse_config
from tests.core.helpers import assert_resumes_exactly

CONFIG = {"method": "orca", "body": {"name": "tiny-bert"},
          "alignment": {"objective": "otdd_exact", "epochs": 3, "maxsamples": 16, "proxy": "digits"},
          "training": {"epochs": 3, "batch_size": 16, "grad_accumulation": 2, "lr": 1e-3, "seed": 3}}


@pytest.mark.parametrize("stop_step", [2, 7])  # inside alignment; mid-epoch inside refinement
def test_resume_gives_identical_weights(classification_1d, tmp_path, stop_step):
    config = parse_config(CONFIG)
    straight = core.run(config, classification_1d, tmp_path / "straight")
    resumed = assert_resumes_exactly(config, classification_1d, tmp_path / "resumed", stop_step, straight)
    assert resumed.summary["test"] == straight.summary["test"]
