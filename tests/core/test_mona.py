"""MoNA: the meta-gradient against an independent autograd computation, its variants, and the recipe end to end."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.nn.attention import SDPBackend, sdpa_kernel

import core
from core.callbacks import Callback
from core.components.meta import (_SourceEncoder, alignment_uniformity, meta_gradient, sample_source_batch,
                                  source_batch, split_parameters)
from core.proxies.bank import load_source_tokens
from core.config import TaskType, parse_config
from core.modeling.model import ModelSpec, build_model
from tests.core.helpers import assert_resumes_exactly

MONA_1D = {"method": "mona", "body": {"name": "tiny-bert"},
           "mona": {"iterations": 3, "source_batch": 16, "inner_lr": 1e-2},
           "alignment": {"proxy_samples": 200},
           "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 1},
           "checkpoint": {"keep_last": 10}}


class Recorder(Callback):
    def __init__(self):
        self.metrics, self.events = [], []

    def on_metric(self, point):
        self.metrics.append(point)

    def on_event(self, event):
        self.events.append(event)


# ---- the objective ---------------------------------------------------------------------------

def test_alignment_uniformity_matches_brute_force():
    torch.manual_seed(0)
    features, labels = torch.randn(7, 5), torch.tensor([0, 0, 1, 1, 1, 2, 3])
    f = features / features.norm(dim=1, keepdim=True)
    same, every = [], []
    for i in range(7):
        for j in range(i + 1, 7):
            d2 = float(((f[i] - f[j]) ** 2).sum())
            every.append(np.exp(-2 * d2))
            if labels[i] == labels[j]:
                same.append(d2)
    align, uniform = alignment_uniformity(features, labels)
    assert float(align) == pytest.approx(np.mean(same), rel=1e-5)
    assert float(uniform) == pytest.approx(np.log(np.mean(every)), rel=1e-5)


def test_source_batches_hold_same_class_pairs():
    labels = torch.arange(40) % 10
    index = sample_source_batch(labels, 16, torch.Generator().manual_seed(0))
    assert len(index) == 16
    assert torch.unique(labels[index], return_counts=True)[1].min() >= 2


@pytest.fixture(scope="module")
def problem():
    """tiny-bert in float64 on a 1D classification batch with WordNet source tokens."""
    config = parse_config({"method": "mona", "body": {"name": "tiny-bert"}})
    model, body = build_model(config, ModelSpec(TaskType.classification, (1, 32), (), 3))
    model.double().eval()
    body.source_embedding.double()
    bank = load_source_tokens("wordnet", body, 120, 64, 64, torch.device("cpu"))
    index = sample_source_batch(bank.labels, 12, torch.Generator().manual_seed(0))
    tokens, mask, grid = source_batch(bank, body, index, torch.device("cpu"))
    assert mask is not None and mask.shape == tokens.shape[:2] and not mask.all()  # padded glosses
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 32, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=generator)
    return model, body, x, y, (tokens.double(), mask, grid), bank.labels[index]


def _loss(output, y):
    return F.cross_entropy(output, y)  # task_loss casts to float32; these checks want float64 throughout


def _meta(problem, variant, alpha, last_k=2, weight=1.0):
    model, body, x, y, source, labels = problem
    return meta_gradient(model, body, x, y, _loss, source, labels, inner_lr=alpha, outer_weight=weight,
                         variant=variant, last_k=last_k)


def _autograd_reference(problem, alpha, weight):
    """∇ψ L_inner − αλ ∂ψ⟨∇θ L_inner, ∇θ' L_outer(θ')⟩ with plain autograd on a module copy."""
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
        return _autograd_terms(problem, alpha, weight)


def _autograd_terms(problem, alpha, weight):
    model, body, x, y, source, labels = problem
    psi = [p for n, p in model.named_parameters() if n.startswith(("embedder.", "head."))]
    theta = {n: p for n, p in model.named_parameters() if n.startswith("body.") and "pooler" not in n}
    loss = _loss(model(x), y)
    inner_psi = torch.autograd.grad(loss, psi, retain_graph=True)
    inner_theta = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
    stepped = copy.deepcopy(body)
    stepped.model.load_state_dict({n[len("body."):]: (p - alpha * g).detach()
                                   for (n, p), g in zip(theta.items(), inner_theta)}, strict=False)
    outer_params = [p for n, p in stepped.model.named_parameters() if "body." + n in theta]
    align, uniform = alignment_uniformity(_SourceEncoder(stepped).body(inputs_embeds=source[0],
                                                                       attention_mask=source[1]).last_hidden_state
                                          .mul(source[1][..., None]).sum(1) / source[1].sum(1, keepdim=True),
                                          labels)
    v = torch.autograd.grad(align + uniform, outer_params)
    mixed = torch.autograd.grad(sum((g * w).sum() for g, w in zip(inner_theta, v)), psi)
    names = [n for n, _ in model.named_parameters() if n.startswith(("embedder.", "head."))]
    model.zero_grad(set_to_none=True)
    return {n: a - alpha * weight * b for n, a, b in zip(names, inner_psi, mixed)}, dict(zip(names, inner_psi))


def _relative(a, b):
    diff = torch.sqrt(sum(((a[n] - b[n]) ** 2).sum() for n in a))
    return float(diff / torch.sqrt(sum((b[n] ** 2).sum() for n in b)))


def test_second_order_matches_autograd_and_variants_agree(problem):
    alpha, weight = 0.5, 2.0  # large enough for the meta term to be visible next to ∇ψ L_inner
    expected, plain = _autograd_reference(problem, alpha, weight)
    second = _meta(problem, "second_order", alpha, weight=weight).grads
    first = _meta(problem, "first_order", alpha, weight=weight).grads
    all_layers = _meta(problem, "last_k_layers", alpha, last_k=2, weight=weight).grads  # tiny-bert has 2
    one_layer = _meta(problem, "last_k_layers", alpha, last_k=1, weight=weight).grads
    meta_term = {n: expected[n] - plain[n] for n in plain}
    assert _relative(meta_term, plain) > 0.1  # the outer loss does reach the target side (~0.95 here)
    assert _relative(second, expected) < 1e-10
    assert _relative(all_layers, expected) < 1e-10
    first_meta = {n: first[n] - plain[n] for n in plain}
    assert _relative(first_meta, meta_term) < 1e-3  # finite difference of the mixed term (~1e-5 here)
    assert _relative(one_layer, expected) > 1e-3  # a shorter virtual step is a different objective
    embedder = [g for n, g in second.items() if n.startswith("embedder.")]
    assert embedder and all(torch.isfinite(g).all() for g in embedder)
    assert sum(float(g.abs().sum()) for n, g in meta_term.items() if n.startswith("embedder.")) > 0


@pytest.mark.parametrize("variant", ["first_order", "second_order", "last_k_layers"])
def test_every_variant_tends_to_the_inner_gradient_as_alpha_vanishes(problem, variant):
    _, plain = _autograd_reference(problem, 0.0, 1.0)
    grads = _meta(problem, variant, 1e-9, last_k=1).grads
    assert grads.keys() == plain.keys()
    assert _relative(grads, plain) < 1e-6


def test_meta_gradient_leaves_the_body_alone(problem):
    model = problem[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for variant in ("first_order", "second_order"):
        _meta(problem, variant, 0.5)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())


def test_last_k_splits_at_layers(problem):
    _, virtual, fixed = split_parameters(problem[0], "last_k_layers", 1)
    assert virtual and all(n.startswith("body.encoder.layer.1.") for n in virtual)
    assert fixed and all(n.startswith("body.encoder.layer.0.") for n in fixed)


# ---- the recipe ---------------------------------------------------------------------------------

def _state(directory):
    return load_file(str(directory / "model.safetensors"))


def test_mona_1d_classification_end_to_end(classification_1d, tmp_path):
    recorder = Recorder()
    config = parse_config(MONA_1D)
    result = core.run(config, classification_1d, tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    assert [e.data["stage_started"] for e in recorder.events if "stage_started" in e.data] == ["meta", "refine"]
    for key in ("mona_inner_loss", "mona_outer_loss"):
        points = [m for m in recorder.metrics if m.key == key]
        assert [m.epoch for m in points] == [0, 1, 2] and all(m.split == "meta" for m in points)
        assert all(np.isfinite(m.value) for m in points)
    inner = [m.value for m in recorder.metrics if m.key == "mona_inner_loss"]
    assert inner[-1] < inner[0]  # the embedder and head learn the task in stage 1
    after_meta = _state(tmp_path / "run" / "checkpoints" / "step-0000003-meta-3-0")  # kept: keep_last 10
    torch.manual_seed(config.training.seed)  # the runner seeds the same way before building the model
    fresh, _ = build_model(config, ModelSpec(TaskType.classification, (1, 64), (), 2))
    initial = fresh.state_dict()
    changed = {k for k in after_meta if not torch.equal(after_meta[k], initial[k])}
    assert changed == {k for k in initial if k.startswith(("embedder.", "head."))}, sorted(changed)
    data = np.load(classification_1d)
    prediction = core.load_checkpoint(result.checkpoint_dir).predict(data["x_test"])
    assert prediction.shape == (len(data["x_test"]),)
    assert np.mean(prediction != data["y_test"]) == pytest.approx(result.summary["test"]["error"])


def test_mona_2d_dense_end_to_end(dense_2d, tmp_path):
    config = parse_config({"method": "mona", "body": {"name": "tiny-bert"},
                           "mona": {"iterations": 2, "source_batch": 8, "variant": "second_order"},
                           "alignment": {"proxy_samples": 100},
                           "training": {"epochs": 2, "batch_size": 8, "lr": 1e-3}})
    result = core.run(config, dense_2d, tmp_path / "run")
    assert 0 < result.summary["test"]["relative_l2"] < 1.5
    prediction = core.load_checkpoint(result.checkpoint_dir).predict(np.load(dense_2d)["x_test"])
    assert prediction.shape == (16, 16, 16)


def test_mona_on_a_vision_body(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    np.savez(tmp_path / "img.npz", x=x[:32], y=y[:32], x_test=x[32:], y_test=y[32:])
    config = parse_config({"method": "mona", "body": {"name": "tiny-swin"},
                           "mona": {"iterations": 2, "source_batch": 8, "variant": "last_k_layers", "last_k": 1},
                           "alignment": {"proxy": "digits", "proxy_samples": 100},
                           "training": {"epochs": 1, "batch_size": 8}})
    recorder = Recorder()
    result = core.run(config, tmp_path / "img.npz", tmp_path / "run", callbacks=[recorder])
    assert result.reason == "completed"
    assert all(np.isfinite(m.value) for m in recorder.metrics if m.split == "meta")
    assert core.load_checkpoint(result.checkpoint_dir).predict(x[32:]).shape == (8,)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    from tests.core.conftest import write_classification_1d

    root = tmp_path_factory.mktemp("mona-resume")
    data = write_classification_1d(root / "train.npz")
    return data, core.run(parse_config(MONA_1D), data, root / "straight")


@pytest.mark.parametrize("stop_step", [2, 6])  # inside stage 1; inside refinement
def test_mona_resume_gives_identical_weights(straight_run, tmp_path, stop_step):
    data, straight = straight_run
    resumed = assert_resumes_exactly(parse_config(MONA_1D), data, tmp_path / "run", stop_step, straight)
    assert resumed.summary["test"] == straight.summary["test"]
