"""The CLI contract: the issue's YAML runs verbatim, leaves its files, and predict writes one row per input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CONTRACT_YAML = """\
method: orca
body: {name: tiny-bert}
alignment: {objective: otdd_exact, epochs: 2, maxsamples: 32, proxy: digits}
training: {epochs: 2, batch_size: 16, lr: 1.0e-3, seed: 0}
"""


def xmodal(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=None)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def test_train_contract_then_predict(classification_1d, tmp_path, repo_root):
    job = tmp_path / "job.yaml"
    job.write_text(CONTRACT_YAML)
    run_dir = tmp_path / "run"
    done = xmodal("train", str(job), "--data", str(classification_1d), "--out", str(run_dir), cwd=repo_root)
    assert done.returncode == 0, done.stderr
    points = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert points and all({"key", "value", "step", "split"} <= set(p) for p in points)
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)
    assert (run_dir / "events.jsonl").read_text().strip()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "error" in summary["validation"] and "error" in summary["test"]
    assert json.loads(done.stdout)["baseline"] == summary["baseline"] and "error" in summary["baseline"]["test"]
    assert "test error: model" in done.stderr and "vs baseline" in done.stderr
    assert {p.name for p in (run_dir / "checkpoint").iterdir()} >= {"model.safetensors", "manifest.json"}

    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.load(classification_1d)["x_test"])
    out = tmp_path / "p.npy"
    done = xmodal("predict", "--checkpoint", str(run_dir / "checkpoint"), "--data", str(inputs), "--out", str(out),
                  cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert np.load(out).shape == (32,)


@pytest.mark.parametrize("yaml_text,field", [
    ("training: {lr: -1}\n", "training.lr"),
    ("training: {batch_size: 0}\n", "training.batch_size"),
    ("method: nope\n", "method"),
    ("alignment: {objective: otdd_exact, epohcs: 3}\n", "alignment.epohcs"),
    ("training: [1, 2\n", "config"),
])
def test_bad_config_is_one_line_and_nonzero(classification_1d, tmp_path, capsys, yaml_text, field):
    from cli.main import main

    job = tmp_path / "job.yaml"
    job.write_text(yaml_text)
    assert main(["train", str(job), "--data", str(classification_1d), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmodal: error: ") and field in err and len(err.strip().splitlines()) == 1


def test_bad_config_exits_nonzero_without_traceback(classification_1d, tmp_path, repo_root):
    job = tmp_path / "job.yaml"
    job.write_text("training: {lr: -1}\n")
    done = xmodal("train", str(job), "--data", str(classification_1d), "--out", str(tmp_path / "r"), cwd=repo_root)
    assert done.returncode == 2 and done.stderr == "xmodal: error: training.lr: Input should be greater than 0\n"


def test_bad_dataset_is_one_line_and_nonzero(tmp_path, repo_root):
    job = tmp_path / "job.yaml"
    job.write_text(CONTRACT_YAML)
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.full((4, 1, 8), np.nan, dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    done = xmodal("train", str(job), "--data", str(data), "--out", str(tmp_path / "r"), cwd=repo_root)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("xmodal: error: x")


def test_predict_rejects_wrong_shape(classification_1d, tmp_path, repo_root):
    import core
    from core.config import parse_config

    result = core.run(parse_config({"method": "finetune", "body": {"name": "tiny-bert"},
                                    "training": {"epochs": 1, "batch_size": 16}}), classification_1d, tmp_path / "run")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 10), dtype=np.float32))
    done = xmodal("predict", "--checkpoint", str(result.checkpoint_dir), "--data", str(tmp_path / "x.npy"),
                  "--out", str(tmp_path / "p.npy"), cwd=repo_root)
    assert done.returncode == 2 and "expected inputs of shape (N, 1, 64)" in done.stderr


def test_model_root_adds_its_proxies_to_the_auto_choice(classification_1d, tmp_path, repo_root):
    """`--model-root` reaches core: the root's own .npz (the target's samples) is measured and wins.
    Fails if `_train` stops passing `model_roots` to `core.run`."""
    root = tmp_path / "models"
    (root / "proxies").mkdir(parents=True)
    own = root / "proxies" / "own.npz"
    own.write_bytes(classification_1d.read_bytes())
    job = tmp_path / "job.yaml"
    job.write_text(CONTRACT_YAML.replace("proxy: digits", "proxy: auto").replace("epochs: 2, batch", "epochs: 1, batch"))
    run_dir = tmp_path / "run"
    done = xmodal("train", str(job), "--data", str(classification_1d), "--out", str(run_dir), "--quiet",
                  "--model-root", str(root), cwd=repo_root)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    chosen = [e for e in events if "distances" in e.get("data", {})]
    assert len(chosen) == 1 and chosen[0]["data"]["proxy"] == str(own)
    assert str(own) in chosen[0]["data"]["distances"]
