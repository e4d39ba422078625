"""PaRe: the k / lambda schedule, token selection, gate gradients, end-to-end runs and exact resume."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import core
from core.callbacks import Callback
from core.components.patch_replacement import (
    LinearGate,
    mix_lambda,
    replace_tokens,
    replaced_count,
)
from core.config import parse_config
from core.runner import build_run
from core.training.refine import plain_loss
from core.training.replacement import build_replacement_loss
from tests.core.helpers import assert_resumes_exactly

BASE = {"method": "pare", "body": {"name": "tiny-bert"}, "embedder": {"target_seq_len": 16},
        "alignment": {"proxy": "digits", "proxy_samples": 100},
        "training": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "seed": 3}}


def config(**sections):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


class Recorder(Callback):
    def __init__(self):
        self.metrics, self.events = [], []

    def on_metric(self, point):
        self.metrics.append(point)

    def on_event(self, event):
        self.events.append(event)


# ---- schedule ----------------------------------------------------------------------------------
def test_k_decays_linearly_to_zero_and_lambda_follows():
    assert [replaced_count(8, epoch / 4) for epoch in range(5)] == [8, 6, 4, 2, 0]
    assert [replaced_count(5, epoch / 2) for epoch in range(3)] == [5, 2, 0]
    assert mix_lambda(6, 8, 16, "k_over_k0") == 0.75
    assert mix_lambda(6, 8, 16, "k_over_n") == 6 / 16
    assert mix_lambda(0, 0, 16, "k_over_k0") == 0.0


# ---- selection ---------------------------------------------------------------------------------
def test_replaced_positions_are_exactly_the_k_lowest_scored():
    torch.manual_seed(0)
    target, source = torch.randn(3, 10, 4), torch.randn(3, 7, 4)
    target_scores, source_scores = torch.rand(3, 10), torch.rand(3, 7)
    mixed, replaced = replace_tokens(target, source, target_scores, source_scores, k=4)
    for b in range(3):
        lowest = sorted(torch.argsort(target_scores[b])[:4].tolist())
        best_source = sorted(torch.argsort(source_scores[b], descending=True)[:4].tolist())
        assert replaced[b].tolist() == lowest
        torch.testing.assert_close(mixed[b, lowest], source[b, best_source], rtol=0, atol=0)
        kept = [i for i in range(10) if i not in lowest]
        torch.testing.assert_close(mixed[b, kept], target[b, kept], rtol=0, atol=0)


def test_padding_is_never_chosen_before_a_real_source_token():
    source_scores = torch.tensor([[0.1, 0.2, 0.9, 0.95]])
    valid = torch.tensor([[True, True, False, False]])
    target, source = torch.zeros(1, 3, 2), torch.arange(8.0).view(1, 4, 2)
    mixed, _ = replace_tokens(target, source, torch.tensor([[0.5, 0.1, 0.2]]), source_scores, k=2,
                              source_valid=valid)
    torch.testing.assert_close(mixed[0, 1:], source[0, :2])


def test_gumbel_selection_keeps_exact_token_values():
    torch.manual_seed(1)
    target, source = torch.randn(2, 8, 3), torch.randn(2, 8, 3)
    gate = LinearGate(3)
    mixed, replaced = replace_tokens(target, source, gate(target), gate(source), k=3, tau=0.9,
                                     generator=torch.Generator().manual_seed(0))
    for b in range(2):
        kept = [i for i in range(8) if i not in replaced[b].tolist()]
        torch.testing.assert_close(mixed[b, kept], target[b, kept])
        assert any(torch.allclose(mixed[b, r], source[b, s]) for r in replaced[b] for s in range(8))


# ---- the loss on a real context ------------------------------------------------------------------
@pytest.fixture
def pare_context(classification_1d, tmp_path):
    def build(**sections):
        run = build_run(config(**sections), classification_1d, tmp_path / "out", None, [])
        return run, build_replacement_loss(run, LinearGate)
    return build


def test_mixed_terms_vanish_at_k_zero(pare_context):
    run, loss_fn = pare_context(pare={"k0": 1}, training={"epochs": 2})  # k = 1 at epoch 0, int(0.5) = 0 at 1
    x, y, model, task_loss = run.data.train.x[:8], run.data.train.y[:8], run.model, plain_loss(run)
    assert loss_fn.schedule.at(0.5) == (0, 0.0)
    model.eval()  # no dropout, so both losses see the same forward pass
    torch.testing.assert_close(loss_fn(model, x, y, 1, 0, 0.5), task_loss(model, x, y, 1, 0, 0.5), rtol=0, atol=0)
    assert not torch.equal(loss_fn(model, x, y, 0, 0, 0.0), task_loss(model, x, y, 0, 0, 0.0))


def test_gate_gets_gradients_in_gumbel_phase_only(pare_context):
    run, loss_fn = pare_context(pare={"gumbel_epochs": 1, "gumbel_max_share": 0.25})  # 1 of 3 epochs, capped
    x, y = run.data.train.x[:8], run.data.train.y[:8]
    gate = loss_fn.modules.scorer.linear
    assert loss_fn.schedule.gumbel_until == 0.25
    loss_fn(run.model, x, y, 0, 0, 0.2).backward()
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    assert loss_fn.modules.source_head.weight.grad.abs().sum() > 0
    gate.zero_grad(set_to_none=True)
    loss_fn(run.model, x, y, 0, 1, 0.3).backward()
    assert gate.weight.grad is None or gate.weight.grad.abs().sum() == 0


# ---- end to end ----------------------------------------------------------------------------------
def _assert_predicts(result, data_path):
    x_test = np.load(data_path)["x_test"][:5]
    prediction = core.load_checkpoint(result.checkpoint_dir).predict(x_test)
    assert len(prediction) == 5 and np.isfinite(prediction).all()
    weights = load_file(str(result.checkpoint_dir / "model.safetensors"))
    assert not any(key.startswith("patch_replacement") for key in weights)


def test_pare_end_to_end_1d_text_proxy(classification_1d, tmp_path):
    recorder = Recorder()
    result = core.run(config(alignment={"proxy": "wordnet", "proxy_samples": 100}), classification_1d,
                      tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    ks = [(p.epoch, p.value) for p in recorder.metrics if p.key == "pare_k"]
    lambdas = [p.value for p in recorder.metrics if p.key == "pare_lambda"]
    assert ks == [(0, 8), (1, 5), (2, 2)]  # k0 = 16 tokens // 2
    assert lambdas == [1.0, 5 / 8, 2 / 8]
    assert any("patch replacement" in e.message for e in recorder.events)
    _assert_predicts(result, classification_1d)


def test_pare_end_to_end_2d_dense(dense_2d, tmp_path):
    result = core.run(config(training={"epochs": 2}), dense_2d, tmp_path / "run")
    assert result.reason == "completed" and np.isfinite(result.summary["test"]["relative_l2"])
    _assert_predicts(result, dense_2d)


def test_pare_resume_gives_identical_weights(classification_1d, tmp_path):
    cfg = config(training={"grad_accumulation": 2})
    straight = core.run(cfg, classification_1d, tmp_path / "straight")
    assert_resumes_exactly(cfg, classification_1d, tmp_path / "resumed", 2, straight)  # mid-epoch, Gumbel phase
