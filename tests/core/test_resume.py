"""Exact resume: stop after a checkpoint, resume, and land on the same weights as an uninterrupted run."""

import pytest
import torch

import core
from core.callbacks import Callback
from core.config import parse_config
from tests.core.helpers import assert_same_weights


class StopAt(Callback):
    def __init__(self, step):
        self.step, self.seen = step, 0

    def on_progress(self, progress):
        self.seen = progress.step

    def should_stop(self):
        return self.seen == self.step


CONFIG = {"method": "orca", "body": {"name": "tiny-bert"},
          "alignment": {"objective": "otdd_exact", "epochs": 3, "maxsamples": 16, "proxy": "digits"},
          "training": {"epochs": 3, "batch_size": 16, "grad_accumulation": 2, "lr": 1e-3, "seed": 3}}


@pytest.mark.parametrize("stop_step", [2, 7])  # inside alignment; mid-epoch inside refinement
def test_resume_gives_identical_weights(classification_1d, tmp_path, stop_step):
    config = parse_config(CONFIG)
    straight = core.run(config, classification_1d, tmp_path / "straight")
    stopped = core.run(config, classification_1d, tmp_path / "resumed", callbacks=[StopAt(stop_step)])
    assert stopped.status == "stopped" and stopped.step == stop_step
    torch.manual_seed(999)  # a resumed process starts with other RNG state; the checkpoint restores it
    resumed = core.run(config, classification_1d, tmp_path / "resumed", resume_from=stopped.checkpoint_dir)
    assert resumed.step == straight.step
    assert_same_weights(straight.checkpoint_dir, resumed.checkpoint_dir)
    assert resumed.summary["test"] == straight.summary["test"]
