"""The classical baseline: learns every task type, selects on validation (or CV), respects its time cap."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

import core
import core.baseline as baseline
from core.config import SELECTION_METRIC, TaskType, parse_config
from core.data.prepare import prepare_data
from core.errors import ConfigError
from tests.core.helpers import StepLog


def learnable(path: Path, task: str, n: int = 160, seed: int = 0) -> Path:
    """A tiny set whose target is a simple function of x, written as an upload would be (with a test split)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 64, 2, 12)).astype(np.float32)
    signal = x[:, 0, :4].sum(axis=1) - x[:, 1, :3].sum(axis=1)
    if task == "classification":
        y = (signal > 0).astype(np.int64)
    elif task == "scalar_regression":
        y = (3.0 * signal + 5.0).astype(np.float32)
    elif task == "multilabel":
        y = np.stack([signal > 0, x[:, 1, 5] > 0, x[:, 0, 7] < 0], axis=1).astype(np.float32)
    elif task == "dense_binary":
        y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    else:  # dense_regression
        y = (2.0 * x[:, 0] - x[:, 1] + 1.0).astype(np.float32)
    np.savez(path, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    return path


# a metric of each task at chance level: 0.5 error / AUROC error, 1.0 r2_error, ~1.4 relative L2
CHANCE = {"classification": ("error", 0.5), "multilabel": ("auroc_error", 0.5), "dense_binary": ("auroc_error", 0.5),
          "scalar_regression": ("r2_error", 1.0), "dense_regression": ("relative_l2", 1.0)}


@pytest.mark.parametrize("task", list(CHANCE))
def test_every_task_learns_well_above_chance(tmp_path, task):
    config = parse_config({"task": task})
    data = prepare_data(config, learnable(tmp_path / "d.npz", task))
    result = baseline.fit_baseline(data, seconds=30.0)
    metric, chance = CHANCE[task]
    assert result.metric == SELECTION_METRIC[TaskType(task)]
    assert result.test[metric] < 0.4 * chance, result
    assert result.validation is not None and result.validation[metric] < 0.4 * chance
    assert result.selection == f"{result.metric} on the validation split"
    best = min(result.candidates, key=lambda c: c["score"])
    assert (best["method"], best["params"]) == (result.method, result.params)
    assert result.train_rows == result.train_rows_used == len(data.train) and result.features == 24


def test_metrics_are_the_models_own(tmp_path):
    """The baseline's test numbers are `compute_metrics` on its predictions, so they compare with the model's."""
    data = prepare_data(parse_config({}), learnable(tmp_path / "d.npz", "classification"))
    result = baseline.fit_baseline(data, seconds=30.0)
    assert set(result.test) == {"error", "f1_error"}


def test_without_validation_split_selects_by_cross_validation(tmp_path):
    config = parse_config({"evaluation": {"validation_fraction": 0.0}})
    data = prepare_data(config, learnable(tmp_path / "d.npz", "classification", n=60))
    result = baseline.fit_baseline(data, seconds=30.0)
    assert data.validation is None and result.validation is None
    assert "3-fold cross-validation on train" in result.selection and "no validation split" in result.selection
    assert result.train_rows_used == 60 and result.test["error"] < 0.2
    assert [c["method"] for c in result.candidates][-1] == "1-nn"  # a small set also tries 1-NN


def test_rows_are_subsampled_to_fit_the_cap(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 6000)
    x = (rng.standard_normal((6000, 1, 400)) + 0.2 * (2 * y - 1)[:, None, None]).astype(np.float32)
    np.savez(tmp_path / "big.npz", x=x[:5000], y=y[:5000], x_test=x[5000:], y_test=y[5000:])
    data = prepare_data(parse_config({}), tmp_path / "big.npz")
    capped = baseline.fit_baseline(data, seconds=0.05)
    assert capped.train_rows == 4500 and capped.train_rows_used < 200
    assert any("train rows" in note for note in capped.notes)
    # still a fitted model, on fewer rows: better than chance (0.5) whichever candidates the cap let it try
    # (on a busy machine only the most regularised one fits in 0.05 s: 0.368 measured; all of them: < 0.2)
    assert capped.seconds < 2.0 and capped.test["error"] < 0.45
    roomy = baseline.fit_baseline(data, seconds=600.0)
    assert roomy.train_rows_used == 4500 and not any("train rows" in note for note in roomy.notes)


def test_features_are_subsampled_past_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(baseline, "MAX_FEATURES", 10)
    data = prepare_data(parse_config({}), learnable(tmp_path / "d.npz", "classification"))
    result = baseline.fit_baseline(data, seconds=30.0)
    assert result.features == 24 and result.features_used == 10
    assert "10 of 24 features (random, seeded)" in result.notes


class Slow:
    """An estimator whose fit takes `SECONDS`: stands in for a solve too slow for the cap."""

    SECONDS = 0.3

    def fit(self, x, y):
        time.sleep(self.SECONDS)
        self.label = int(np.bincount(y).argmax())
        return self

    def predict(self, x):
        return np.full(len(x), self.label)


def test_no_candidate_starts_past_the_cap(tmp_path, monkeypatch):
    slow = [baseline.Candidate("slow", {"k": float(k)}, Slow) for k in range(4)]
    monkeypatch.setattr(baseline, "candidates", lambda task, rows: slow)
    data = prepare_data(parse_config({}), learnable(tmp_path / "d.npz", "classification"))
    result = baseline.fit_baseline(data, seconds=0.5)
    assert [c["params"] for c in result.candidates] == [{"k": 0.0}]
    assert "time cap: 3 of 4 candidates not tried" in result.notes
    assert result.seconds < 0.5 + 3 * Slow.SECONDS  # one fit, not all four


def test_comparison_says_which_is_better():
    summary = {"test": {"error": 0.1}}
    base = {"method": "logistic_regression", "params": {"C": 0.1}, "metric": "error", "validation": None,
            "test": {"error": 0.2}, "seconds": 1.25}
    assert baseline.comparison(summary, base) == ("test error: model 0.1 vs baseline logistic_regression(C=0.1) 0.2 "
                                                  "(model better; baseline took 1.2 s)")
    assert "baseline better" in baseline.comparison({"test": {"error": 0.3}}, base)


RUN = {"method": "finetune", "body": {"name": "tiny-bert"}, "training": {"epochs": 1, "batch_size": 32, "seed": 0}}


def test_run_reports_the_baseline_in_summary_and_event(classification_1d, tmp_path):
    log = StepLog()
    result = core.run(parse_config(RUN), classification_1d, tmp_path / "run", callbacks=[log])
    assert result.reason == "completed", result.error
    found = result.summary["baseline"]
    assert found["method"] and set(found["test"]) == set(result.summary["test"])
    assert found["validation"] is not None and found["seconds"] >= 0
    reported = [e for e in log.events if "baseline" in e.data]
    assert len(reported) == 1 and reported[0].data["baseline"] == found and "vs baseline" in reported[0].message
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["baseline"] == found


def test_baseline_can_be_turned_off(classification_1d, tmp_path):
    config = parse_config({**RUN, "evaluation": {"baseline": False}})
    result = core.run(config, classification_1d, tmp_path / "run")
    assert result.reason == "completed" and "baseline" not in result.summary


def test_bad_cap_names_the_field():
    with pytest.raises(ConfigError) as caught:
        parse_config({"evaluation": {"baseline_seconds": 0}})
    assert caught.value.field == "evaluation.baseline_seconds"
