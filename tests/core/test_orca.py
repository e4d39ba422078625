"""ORCA end to end on tiny bodies: align then refine, checkpoint, predict in a fresh load."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import core
from core.callbacks import Callback
from core.config import TaskType, parse_config
from core.modeling.model import ModelSpec, build_model


class Recorder(Callback):
    def __init__(self, stop_after: int | None = None):
        self.metrics, self.events, self.checkpoints, self.progress = [], [], [], []
        self.stop_after = stop_after

    def on_metric(self, point):
        self.metrics.append(point)

    def on_event(self, event):
        self.events.append(event)

    def on_checkpoint(self, checkpoint):
        self.checkpoints.append(checkpoint)

    def on_progress(self, progress):
        self.progress.append(progress)

    def stop_reason(self):
        return "shutdown" if self.stop_after is not None and len(self.progress) >= self.stop_after else None


ORCA_1D = {"method": "orca", "body": {"name": "tiny-bert"},
           "alignment": {"objective": "otdd_exact", "epochs": 2, "maxsamples": 32, "proxy": "digits"},
           "training": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "seed": 0}}


def test_orca_1d_classification_end_to_end(classification_1d, tmp_path):
    recorder = Recorder()
    result = core.run(parse_config(ORCA_1D), classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    stages = [e.data.get("stage_started") for e in recorder.events if e.data.get("stage_started")]
    assert stages == ["align", "refine"]
    align_points = [m for m in recorder.metrics if m.split == "align"]
    assert [m.epoch for m in align_points] == [0, 1] and all(np.isfinite(m.value) for m in align_points)
    assert recorder.progress[-1].step == recorder.progress[-1].total_steps
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) >= {"validation", "test"}
    # It learned: chance is 0.5 on these two classes, and seeds 0-4 all reach 0.0. An error alone could
    # be luck (an untrained head is all right or all wrong on a level shift), so the train loss must
    # fall too: it ends at 0.31-0.47 of its first value on seeds 0-4, and stays at 1.00 with lr 0.
    assert summary["test"]["error"] <= 0.1
    losses = [m.value for m in recorder.metrics if m.key == "loss" and m.split == "train"]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    predictor = core.load_checkpoint(result.checkpoint_dir)
    x_test = np.load(classification_1d)["x_test"]
    prediction = predictor.predict(x_test)
    assert prediction.shape == (len(x_test),)
    assert np.mean(prediction != np.load(classification_1d)["y_test"]) == pytest.approx(summary["test"]["error"])


def test_alignment_lowers_the_otdd(classification_1d, tmp_path):
    """Every epoch measures the OTDD on the same targets (maxsamples covers every class), before its step;
    the last of 8 ends 7-15% below the first on seeds 0-4 (with the digits proxy standardised like the
    target; 4 epochs gave 1-10%), and is unchanged when alignment does not learn (lr ~0: ratio 1.0)."""
    config = parse_config({**ORCA_1D, "alignment": {**ORCA_1D["alignment"], "epochs": 8, "maxsamples": 96},
                           "training": {**ORCA_1D["training"], "epochs": 0}})
    recorder = Recorder()
    core.run(config, classification_1d, tmp_path / "run", callbacks=[recorder])
    otdd = [m.value for m in recorder.metrics if m.split == "align" and m.key == "otdd_exact"]
    assert len(otdd) == 8 and np.isfinite(otdd).all()
    assert otdd[-1] < 0.97 * otdd[0], otdd


def test_alignment_moves_only_the_embedder(classification_1d, tmp_path):
    config = parse_config({**ORCA_1D, "training": {**ORCA_1D["training"], "epochs": 0}})
    result = core.run(config, classification_1d, tmp_path / "run")
    first = load_file(str(next((tmp_path / "run" / "checkpoints").iterdir()) / "model.safetensors"))
    torch.manual_seed(config.training.seed)  # the runner seeds the same way before building the model
    fresh, _ = build_model(config, ModelSpec(TaskType.classification, (1, 64), (), 2))
    fresh_state = fresh.state_dict()
    changed = {k for k in first if not np.allclose(first[k].numpy(), fresh_state[k].numpy())}
    assert changed and all(k.startswith("embedder.") for k in changed), changed
    assert result.reason == "completed"


def test_orca_2d_dense_end_to_end(dense_2d, tmp_path):
    config = parse_config({"method": "orca", "body": {"name": "tiny-bert"},
                           "alignment": {"objective": "otdd_gaussian", "epochs": 2, "maxsamples": 16, "proxy": "digits",
                                         "pseudo_labels": 4},
                           "training": {"epochs": 3, "batch_size": 8, "lr": 1e-3}})
    result = core.run(config, dense_2d, tmp_path / "run")
    test = result.summary["test"]
    assert 0 < test["relative_l2"] < 1.5
    prediction = core.load_checkpoint(result.checkpoint_dir).predict(np.load(dense_2d)["x_test"])
    assert prediction.shape == (16, 16, 16)


def test_orca_on_swin_body(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    np.savez(tmp_path / "img.npz", x=x[:32], y=y[:32], x_test=x[32:], y_test=y[32:])
    config = parse_config({"method": "orca", "body": {"name": "tiny-swin"},
                           "alignment": {"objective": "mmd", "epochs": 1, "maxsamples": 8, "proxy": "digits"},
                           "training": {"epochs": 1, "batch_size": 8}})
    result = core.run(config, tmp_path / "img.npz", tmp_path / "run")
    assert result.reason == "completed"
    assert core.load_checkpoint(result.checkpoint_dir).predict(x[32:]).shape == (8,)


def test_stop_request_checkpoints_and_returns(classification_1d, tmp_path):
    recorder = Recorder(stop_after=3)
    result = core.run(parse_config(ORCA_1D), classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "shutdown" and result.step == 3
    assert recorder.checkpoints and recorder.checkpoints[-1].path == result.checkpoint_dir
    assert (result.checkpoint_dir / "trainer_state.safetensors").exists()


def test_only_the_newest_checkpoints_are_kept(classification_1d, tmp_path):
    recorder = Recorder()
    config = parse_config({**ORCA_1D, "checkpoint": {"keep_last": 2}})
    core.run(config, classification_1d, tmp_path / "run", callbacks=[recorder])
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(recorder.checkpoints) > 3  # align end + one per refine epoch + final
    assert kept == sorted(c.path.name for c in recorder.checkpoints if not c.final)[-2:]
