"""contrastive_pare: noise views, correlation weights, the contrastive loss, end-to-end runs, exact resume."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import core
from core.callbacks import Callback
from core.components.contrastive import contrastive_loss, label_correlation, noise_views, pair_weights
from core.components.patch_replacement import AttentionScorer
from core.config import parse_config
from core.runner import build_run
from core.training.replacement import build_replacement_loss
from tests.core.helpers import assert_resumes_exactly

BASE = {"method": "contrastive_pare", "body": {"name": "tiny-bert"}, "embedder": {"target_seq_len": 16},
        "alignment": {"proxy": "digits", "proxy_samples": 100, "pseudo_labels": 3},
        "contrastive": {"epochs": 1, "noise_scales": [0.2, 0.5], "noise_steps": 2},
        "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 5}}


def config(**sections):
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in BASE.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


class Recorder(Callback):
    def __init__(self):
        self.metrics = []

    def on_metric(self, point):
        self.metrics.append(point)


# ---- components --------------------------------------------------------------------------------
def test_noise_views_keep_unit_variance():
    x = torch.randn(20_000, 1, 4, generator=torch.Generator().manual_seed(0))
    views = noise_views(x, [0.1, 0.5, 0.9], steps=3, generator=torch.Generator().manual_seed(1))
    assert views.shape == (9 * 20_000, 1, 4)
    for view in views.view(9, 20_000, 4):
        assert abs(view.var().item() - 1.0) < 0.03
    assert not torch.equal(views[:20_000], x)  # the views are perturbed


def test_correlation_weights_are_one_on_same_label_pairs():
    labels = torch.tensor([0, 0, 1, 1, 2])
    one_hot = F.one_hot(labels).float()
    weights = pair_weights(labels, one_hot, eps=1e-3)
    assert torch.equal(weights, torch.ones(5, 5))  # classes: every different-label pair is uncorrelated
    vectors = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    weights = pair_weights(labels, vectors, eps=1e-3)
    same = labels[:, None] == labels[None, :]
    assert torch.equal(weights[same], torch.ones(int(same.sum())))
    assert math.isclose(weights[~same].mean().item(), 1.0, rel_tol=1e-5)
    correlation = label_correlation(torch.tensor([[1.0, 2, 3], [2.0, 4, 6], [3.0, 2, 1]]))
    torch.testing.assert_close(correlation, torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]]))


def test_loss_matches_the_formula():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    weights = torch.rand(6, 6, generator=torch.Generator().manual_seed(3)) + 0.5
    weights[labels[:, None] == labels[None, :]] = 1.0
    s = torch.exp(F.cosine_similarity(z[:, None], z[None, :], dim=-1) / 0.5)
    expected = []
    for label in (0, 1):  # label 2 has a single member: no positive pair
        members = [i for i in range(6) if labels[i] == label]
        positive = sum(s[i, j] for i in members for j in members if i != j)
        total = sum(weights[i, j] * s[i, j] for i in members for j in range(6) if j != i)
        expected.append(-torch.log(positive / total))
    torch.testing.assert_close(contrastive_loss(z, labels, weights, 0.5), torch.stack(expected).mean())


def test_loss_falls_on_a_separable_toy_set():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(8)
    centres = torch.randn(4, 6, generator=generator) * 2
    x = centres[labels] + 0.3 * torch.randn(32, 6, generator=generator)
    torch.manual_seed(0)
    embedder = torch.nn.Linear(6, 8)
    optimizer = torch.optim.Adam(embedder.parameters(), lr=0.05)
    weights = pair_weights(labels, F.one_hot(labels).float(), 1e-3)
    losses = []
    for _ in range(40):
        loss = contrastive_loss(embedder(x), labels, weights, temperature=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_freeze_embedder_stops_its_gradients(classification_1d, tmp_path):
    run = build_run(config(contrastive={"freeze_embedder": True}), classification_1d, tmp_path, None, [])
    loss_fn = build_replacement_loss(run, AttentionScorer, detach_embedder=True)
    loss_fn(run.model, run.data.train.x[:8], run.data.train.y[:8], 0, 0, 0.0).backward()
    assert all(p.grad is None for p in run.model.embedder.parameters())
    assert run.model.head.linear.weight.grad is not None
    assert loss_fn.modules.scorer.query.weight.grad.abs().sum() > 0  # attention scorer learns (Gumbel phase)


# ---- end to end ----------------------------------------------------------------------------------
def _assert_predicts(result, data_path):
    prediction = core.load_checkpoint(result.checkpoint_dir).predict(np.load(data_path)["x_test"][:5])
    assert len(prediction) == 5 and np.isfinite(prediction).all()


def test_contrastive_pare_end_to_end_1d(classification_1d, tmp_path):
    recorder = Recorder()
    result = core.run(config(), classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    stage_one = [p for p in recorder.metrics if p.key == "contrastive_loss"]
    assert len(stage_one) == 1 and stage_one[0].split == "contrastive" and np.isfinite(stage_one[0].value)
    assert [p.value for p in recorder.metrics if p.key == "pare_k"] == [8, 4]
    _assert_predicts(result, classification_1d)


def test_contrastive_pare_end_to_end_2d_dense(dense_2d, tmp_path):
    recorder = Recorder()
    result = core.run(config(contrastive={"freeze_embedder": True}), dense_2d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    assert any(p.key == "contrastive_loss" and p.value > 0 for p in recorder.metrics)  # k-means labels
    _assert_predicts(result, dense_2d)


@pytest.mark.parametrize("stop_at", [2, 9])  # inside the contrastive stage (6 steps); mid-epoch inside refinement
def test_contrastive_pare_resume_gives_identical_weights(classification_1d, tmp_path, stop_at):
    cfg = config()
    straight = core.run(cfg, classification_1d, tmp_path / "straight")
    assert_resumes_exactly(cfg, classification_1d, tmp_path / "resumed", stop_at, straight)
