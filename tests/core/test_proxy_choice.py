"""`alignment.proxy: auto` measures every candidate's OTDD to the target and takes the smallest.

On tiny-swin a grayscale target's initial embedder is the body's own patch embedding (the RGB
kernel summed over channels), so a proxy of the target's own kind is measured in the same space
as the target: digits is nearest to a digits target, a copy of the target nearer still.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import core
from core.config import parse_config
from core.errors import ConfigError
from core.methods.proxy_setup import proxy_for
from core.proxies import choice
from core.runner import build_run
from tests.core.helpers import StepLog, assert_resumes_exactly


def write_digits(path: Path, n: int = 300) -> Path:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[: n + 60, None] / 16.0).astype(np.float32)
    y = data.target[: n + 60].astype(np.int64)
    np.savez(path, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    return path


def swin_run(data: Path, out: Path, log: StepLog, model_roots=(), **alignment):
    config = parse_config({"method": "orca", "body": {"name": "tiny-swin"},
                           "alignment": {"proxy": "auto", **alignment}})
    return build_run(config, data, out, None, [log], torch.device("cpu"), model_roots)


def proxy_events(log: StepLog) -> tuple[dict[str, float], dict[str, str], list[dict]]:
    """Measured distances and skip reasons per candidate, and the choice events."""
    measured = {e.data["proxy_candidate"]: e.data["otdd"] for e in log.events if "otdd" in e.data
                and "proxy_candidate" in e.data}
    skipped = {e.data["proxy_candidate"]: e.data["skipped"] for e in log.events if "skipped" in e.data}
    chosen = [e.data for e in log.events if "distances" in e.data]
    return measured, skipped, chosen


def test_auto_picks_digits_for_a_digits_target_and_reports_every_distance(tmp_path):
    log = StepLog()
    run = swin_run(write_digits(tmp_path / "digits.npz"), tmp_path / "run", log)
    assert proxy_for(run) == "digits"
    measured, skipped, chosen = proxy_events(log)
    assert set(measured) == {"fashion-mnist", "digits"}
    assert measured["digits"] < measured["fashion-mnist"]
    assert set(skipped) == {"wordnet"} and "vision" in skipped["wordnet"]  # a text proxy on a vision body
    assert len(chosen) == 1 and chosen[0]["proxy"] == "digits" and chosen[0]["distances"] == measured
    assert chosen[0]["seconds"] > 0


def test_a_labelled_npz_under_a_model_root_is_a_candidate(tmp_path):
    root = tmp_path / "models"
    (root / "proxies").mkdir(parents=True)
    data = write_digits(tmp_path / "digits.npz")
    copy = root / "proxies" / "own.npz"
    copy.write_bytes(data.read_bytes())
    series = root / "proxies" / "series.npz"  # 1D samples: no image proxy for a vision body
    np.savez(series, x=np.zeros((20, 1, 16), np.float32), y=np.arange(20) % 2)
    escape = root / "proxies" / "escape.npz"  # a link out of the root is refused, as a named proxy file is
    escape.symlink_to(data)
    log = StepLog()
    run = swin_run(data, tmp_path / "run", log, model_roots=[root])
    assert proxy_for(run) == str(copy)  # the target's own samples are nearer than any built-in
    measured, skipped, _ = proxy_events(log)
    assert set(measured) == {"fashion-mnist", "digits", str(copy)}
    assert set(skipped) == {"wordnet", str(series), str(escape)}
    assert "image" in skipped[str(series)] and "not allowed" in skipped[str(escape)]


def test_an_explicit_proxy_is_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "measure", lambda *args: pytest.fail("an explicit proxy was measured"))
    log = StepLog()
    run = swin_run(write_digits(tmp_path / "digits.npz"), tmp_path / "run", log, proxy="fashion-mnist")
    assert proxy_for(run) == "fashion-mnist"
    assert not any("proxy_candidate" in e.data for e in log.events)


def test_no_usable_proxy_is_a_config_error_naming_the_field():
    results = [choice.Measured("wordnet", None, 0.0, "a text proxy"), choice.Measured("digits", None, 0.1, "gone")]
    with pytest.raises(ConfigError, match="wordnet: a text proxy; digits: gone") as raised:
        choice.nearest(results)
    assert raised.value.field == "alignment.proxy"


def test_the_choice_survives_resume_without_measuring_again(tmp_path, monkeypatch):
    data = write_digits(tmp_path / "digits.npz", n=64)
    config = parse_config({"method": "orca", "body": {"name": "tiny-swin"},
                           "alignment": {"proxy": "auto", "epochs": 2, "maxsamples": 16, "proxy_samples": 100},
                           "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 1}})
    straight_log = StepLog()
    straight = core.run(config, data, tmp_path / "straight", callbacks=[straight_log])
    assert straight.reason == "completed", straight.error
    assert [e.data["proxy"] for e in straight_log.events if "distances" in e.data] == ["digits"]
    real_measure = choice.measure
    calls = []
    monkeypatch.setattr(choice, "measure", lambda *args: calls.append(args[0]) or real_measure(*args))
    assert_resumes_exactly(config, data, tmp_path / "resumed", 1, straight)  # inside alignment
    assert calls == list(choice.candidate_proxies(()))  # the stopped run measured; the resumed one read it back
