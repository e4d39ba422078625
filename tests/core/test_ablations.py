"""The ablation switches ("What explains the success of cross-modal fine-tuning with ORCA?") do what they say.

Each switch is one config field: `alignment.epochs: 0`, `freeze`, `body.pretrained: false`, `alignment.proxy`.
"""

import numpy as np
import pytest
import torch

import core
from core.modeling.bodies import load_body
from core.callbacks import Callback
from core.config import BodyConfig, parse_config
from core.methods import orca
from core.runner import build_run
from core.training.refine import refine

ORCA = {"method": "orca", "body": {"name": "tiny-bert"},
        "alignment": {"objective": "mmd", "epochs": 1, "maxsamples": 16, "proxy": "digits", "proxy_samples": 100},
        "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3}}
FINETUNE = {"method": "finetune", "body": {"name": "tiny-bert"}, "training": {"epochs": 1, "batch_size": 16, "lr": 1e-3}}


class Recorder(Callback):
    def __init__(self):
        self.metrics, self.events = [], []

    def on_metric(self, point):
        self.metrics.append(point)

    def on_event(self, event):
        self.events.append(event)


def _parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {"embedder": {}, "body": {}, "head": {}}
    for key, value in state.items():
        parts[key.split(".", 1)[0]][key] = value.detach().clone()
    return parts


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)


def test_zero_alignment_epochs_skip_alignment(classification_1d, tmp_path):
    recorder = Recorder()
    config = parse_config({**ORCA, "alignment": {**ORCA["alignment"], "epochs": 0}})
    result = core.run(config, classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    assert [e.data["stage_started"] for e in recorder.events if "stage_started" in e.data] == ["refine"]
    assert not [m for m in recorder.metrics if m.split == "align"]
    assert not [e for e in recorder.events if e.stage == "align"]
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if "-align-" in p.name]


@pytest.mark.parametrize(("method", "freeze", "moves"), [
    ("finetune", "body", {"embedder", "head"}),
    ("finetune", "embedder", {"body", "head"}),
    ("finetune", "both", {"head"}),
    ("finetune", "none", {"embedder", "body", "head"}),
    ("orca", "embedder", {"body", "head"}),
    ("orca", "body", {"embedder", "head"}),
])
def test_freeze_keeps_frozen_parts_at_their_refine_start(classification_1d, tmp_path, method, freeze, moves):
    """Frozen parts leave refine as they entered it (pretrained body; aligned or initial embedder)."""
    base = ORCA if method == "orca" else FINETUNE
    config = parse_config({**base, "freeze": freeze})
    run = build_run(config, classification_1d, tmp_path / "run", None, [])
    initial = _parts(run.model.state_dict())
    if method == "orca":
        orca.align(run)
    at_refine = _parts(run.model.state_dict())
    refine(run)
    final = _parts(run.model.state_dict())
    for part in ("embedder", "body", "head"):
        if part in moves:
            assert _changed(at_refine[part], final[part]), f"{part} should train with freeze={freeze}"
        else:
            assert _same(at_refine[part], final[part]), f"{part} moved with freeze={freeze}"
    if method == "orca":
        assert _changed(initial["embedder"], at_refine["embedder"])  # alignment still trains the embedder
        assert _same(initial["body"], at_refine["body"])


def test_frozen_body_equals_the_pretrained_weights(classification_1d, tmp_path):
    config = parse_config({**FINETUNE, "freeze": "body"})
    result = core.run(config, classification_1d, tmp_path / "run")
    from safetensors.torch import load_file

    saved = load_file(str(result.checkpoint_dir / "model.safetensors"))
    pretrained = load_body(config.body).model.state_dict()
    body = {k[len("body."):]: v for k, v in saved.items() if k.startswith("body.")}
    assert body.keys() == pretrained.keys()
    for key in body:
        torch.testing.assert_close(body[key], pretrained[key], rtol=0, atol=0, msg=key)


def test_random_init_body_has_the_same_architecture_and_other_weights():
    pretrained = load_body(BodyConfig(name="minilm-l6"))
    scratch = load_body(BodyConfig(name="minilm-l6", pretrained=False))
    a, b = pretrained.model.state_dict(), scratch.model.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    weights = [k for k in a if k.endswith("weight") and a[k].dim() == 2]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)
    assert (pretrained.width, pretrained.max_positions) == (scratch.width, scratch.max_positions)


def test_random_init_tiny_body_differs():
    a = load_body(BodyConfig(name="tiny-bert")).model.state_dict()
    b = load_body(BodyConfig(name="tiny-bert", pretrained=False)).model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _custom_proxy(path):
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), 20)
    x = (rng.standard_normal((60, 1, 64)) + y[:, None, None]).astype(np.float32)
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


@pytest.mark.parametrize("proxy", ["digits", "custom"])
def test_orca_runs_with_another_proxy(classification_1d, tmp_path, proxy):
    name = str(_custom_proxy(tmp_path / "proxy.npz")) if proxy == "custom" else proxy
    recorder = Recorder()
    config = parse_config({**ORCA, "alignment": {**ORCA["alignment"], "proxy": name, "proxy_samples": 60}})
    result = core.run(config, classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    started = [e.message for e in recorder.events if e.data.get("stage_started") == "align"]
    assert len(started) == 1 and f"proxy {name} " in started[0]
    assert [m for m in recorder.metrics if m.split == "align"] and np.isfinite(result.summary["test"]["error"])
