"""Alignment objectives: OTDD properties and a brute-force match, gradients, MMD/L2, k-means labels."""

import numpy as np
import ot
import pytest
import torch

from core.alignment import build_objective, kmeans_pseudo_labels
from core.alignment import otdd as otdd_module
from core.alignment.labels import LabelCosts, exact_w2, gaussian_w2, GaussianStats
from core.alignment.sinkhorn import sinkhorn, sinkhorn_batched, squared_distances
from core.errors import ConfigError
from core.training.state import load_state, save_state


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems, thousands of small ops: intra-op threads only add overhead (2x on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def labelled(seed: int, n: int = 60, d: int = 4, classes: int = 3, shift: float = 0.0, spread: float = 3.0,
             scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(classes, d, generator=torch.Generator().manual_seed(100))
    y = torch.arange(n) % classes
    return scale * (means[y] + 0.5 * torch.randn(n, d, generator=g) + shift), y


def otdd(source, target, name="otdd_exact", eps=0.1, **options):
    return float(build_objective(name, *source, epsilon=eps, **options)(*target))


def pot_entropic(cost, eps):
    """<P, C> + eps KL(P | ab^T) with P from POT's log-domain Sinkhorn (uniform weights)."""
    a, b = ot.unif(cost.shape[0]), ot.unif(cost.shape[1])
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=5_000, stopThr=1e-9)
    mask = plan > 0
    return float((plan * cost).sum() + eps * (plan[mask] * np.log(plan[mask] / np.outer(a, b)[mask])).sum())


def debiased_pot(x1, x2, eps):
    """Debiased Sinkhorn divergence between two uniform clouds, by POT."""
    return (pot_entropic(ot.dist(x1, x2), eps) - 0.5 * pot_entropic(ot.dist(x1, x1), eps)
            - 0.5 * pot_entropic(ot.dist(x2, x2), eps))


def brute_force_otdd(source, target, eps, label_solver="emd"):
    """Full augmented costs (label W by ot.emd2 on the clouds, or POT's debiased Sinkhorn at eps),
    entropic OT_eps via POT, debiased."""
    def label_w(x1, y1, x2, y2):
        def w(p, q):
            if label_solver == "emd":
                return ot.emd2(ot.unif(len(p)), ot.unif(len(q)), ot.dist(p, q))
            return debiased_pot(p, q, eps)
        return {(i, j): 0.0 if (x1 is x2 and i == j) else w(x1[y1 == i], x2[y2 == j])
                for i in np.unique(y1) for j in np.unique(y2)}

    def ot_eps(x1, y1, x2, y2):
        w = label_w(x1, y1, x2, y2)
        cost = ot.dist(x1, x2) + np.array([[w[i, j] for j in y2] for i in y1])
        return pot_entropic(cost, eps)

    (xs, ys), (xt, yt) = [(x.double().numpy(), y.numpy()) for x, y in (source, target)]
    return ot_eps(xs, ys, xt, yt) - 0.5 * ot_eps(xs, ys, xs, ys) - 0.5 * ot_eps(xt, yt, xt, yt)


def test_sinkhorn_solver_matches_pot_log_domain():
    g = torch.Generator().manual_seed(0)
    x, y = 2 * torch.randn(30, 3, generator=g), 2 * torch.randn(40, 3, generator=g)
    cost = torch.cdist(x, y) ** 2
    a, b = torch.full((30,), 1 / 30), torch.full((40,), 1 / 40)
    ours = sinkhorn(cost, a, b, 0.5, rtol=1e-9)
    assert ours.value == pytest.approx(pot_entropic(cost.double().numpy(), 0.5), rel=1e-4)
    assert torch.allclose(ours.plan.sum(1).double(), a.double(), atol=1e-5)


@pytest.mark.parametrize("name", ["otdd_exact", "otdd_gaussian"])
def test_otdd_of_a_dataset_with_itself_is_zero(name):
    data = labelled(0)
    assert abs(otdd(data, data, name)) < 1e-3


def test_otdd_is_symmetric():
    d1, d2 = labelled(0), labelled(1, n=45, shift=0.7)
    assert otdd(d1, d2) == pytest.approx(otdd(d2, d1), rel=1e-4)


def test_otdd_grows_with_shift():
    source = labelled(0)
    values = [otdd(source, labelled(1, shift=s)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("label_solver", ["emd", "sinkhorn"])
def test_otdd_matches_brute_force_on_tiny_data(label_solver):
    """Costs of a few units (POT's plain log-domain Sinkhorn converges there in a few thousand steps)."""
    source, target = labelled(0, n=24, d=3, scale=0.4), labelled(1, n=18, d=3, shift=0.5, scale=0.4)
    ours = otdd(source, target, label_solver=label_solver)
    assert ours == pytest.approx(brute_force_otdd(source, target, 0.1, label_solver), rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("label_solver", ["emd", "sinkhorn"])
def test_single_target_label_as_orca_calls_it_matches_brute_force(label_solver):
    """The single-label shortcut (plain feature cost + <b, W^2(t, y_j)>) against the full augmented problem."""
    source = labelled(0, n=30, d=3, scale=0.4)
    xt = labelled(2, n=16, d=3, shift=1.0, scale=0.4)[0]
    target = (xt, torch.zeros(16, dtype=torch.long))
    ours = otdd(source, target, label_solver=label_solver)
    assert ours == pytest.approx(brute_force_otdd(source, target, 0.1, label_solver), rel=1e-3)


def test_a_per_column_constant_leaves_plan_and_gradient_unchanged_and_shifts_the_value_by_b_dot_w():
    """The identity behind the single-label shortcut: OT_eps(C + 1 w^T) = OT_eps(C) + <b, w>, same plan."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 3, generator=g), torch.randn(35, 3, generator=g)
    cost = squared_distances(x, y).double()
    w = 5 * torch.rand(35, generator=g, dtype=torch.float64)
    a, b = torch.full((20,), 1 / 20), torch.rand(35, generator=g, dtype=torch.float64) + 0.5
    b = b / b.sum()
    plain, shifted = sinkhorn(cost, a, b, 0.1, rtol=1e-13), sinkhorn(cost + w, a, b, 0.1, rtol=1e-13)
    assert shifted.value == pytest.approx(plain.value + float(b @ w), rel=1e-9)
    assert torch.allclose(shifted.plan, plain.plan, atol=1e-6)  # both stopped at a (value) tolerance
    assert torch.allclose(shifted.g - plain.g, w + float((shifted.g - plain.g - w).mean()), atol=1e-4)
    # ... so the objective's gradient w.r.t. the target does not depend on the label term either
    source, xt = labelled(0, n=30, d=3), labelled(1, n=10, d=3, shift=1.0)[0].double().requires_grad_()
    zeros = torch.zeros(10, dtype=torch.long)
    grads = []
    for solver in ("emd", "sinkhorn"):
        xt.grad = None
        build_objective("otdd_exact", *source, label_solver=solver, rtol=1e-7)(xt, zeros).backward()
        grads.append(xt.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_warm_start_does_not_change_the_value():
    source = labelled(0, n=60, scale=0.5)
    warm = build_objective("otdd_exact", *source)
    xt = labelled(3, n=32, shift=1.0, scale=0.5)[0]
    zeros = torch.zeros(32, dtype=torch.long)
    for step in range(2):
        moved = xt + 0.05 * step
        cold = build_objective("otdd_exact", *source)
        cold.warm_start = False
        assert float(warm(moved, zeros)) == pytest.approx(float(cold(moved, zeros)), rel=2e-3)


@pytest.mark.parametrize("name", ["otdd_exact", "otdd_gaussian", "mmd", "l2"])
def test_gradients_reach_the_embedder(name):
    source = labelled(0, d=4)
    objective = build_objective(name, *source)
    embedder = torch.nn.Linear(6, 4)
    raw = torch.randn(20, 6, generator=torch.Generator().manual_seed(5))
    loss = objective(embedder(raw), torch.zeros(20, dtype=torch.long))
    loss.backward()
    assert loss.dim() == 0
    assert embedder.weight.grad is not None and embedder.weight.grad.abs().sum() > 0


def test_otdd_gradient_matches_finite_differences(monkeypatch):
    """Label-to-label costs are constants by design, so they are frozen for the finite differences."""
    source = labelled(0, n=30, d=3)
    objective = build_objective("otdd_exact", *source, epsilon=1.0)
    objective.warm_start = False
    frozen = {}

    class FrozenLabelCosts(otdd_module.LabelCosts):
        def between(self, other, symmetric=False, **options):
            if symmetric not in frozen:
                frozen[symmetric] = super().between(other, symmetric, **options)
            return frozen[symmetric]

    monkeypatch.setattr(otdd_module, "LabelCosts", FrozenLabelCosts)
    x = labelled(4, n=12, d=3, shift=1.0)[0].double().requires_grad_()
    zeros = torch.zeros(12, dtype=torch.long)
    objective(x, zeros).backward()
    direction = torch.randn_like(x)
    h = 1e-2
    numeric = (float(objective((x + h * direction).detach(), zeros))
               - float(objective((x - h * direction).detach(), zeros))) / (2 * h)
    assert float((x.grad * direction).sum()) == pytest.approx(numeric, rel=2e-2)


def test_gaussian_variant_is_close_to_exact_on_gaussian_data():
    source, target = labelled(0, n=300, d=3), labelled(1, n=150, d=3, shift=1.0)
    exact, gaussian = otdd(source, target), otdd(source, target, "otdd_gaussian")
    assert gaussian == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("name", ["mmd", "l2"])
def test_moment_objectives_vanish_on_identical_sets_and_grow_with_shift(name):
    source = labelled(0)
    objective = build_objective(name, *source)
    same = float(objective(*source))
    assert abs(same) < 1e-6
    assert float(objective(labelled(0, shift=1.0)[0], source[1])) > 1e-3


def test_unknown_objective_is_a_config_error():
    with pytest.raises(ConfigError):
        build_objective("wasserstein", *labelled(0))


def test_kmeans_pseudo_labels_shape_range_and_clipping():
    targets = np.random.default_rng(0).normal(size=(50, 2, 3))
    labels = kmeans_pseudo_labels(targets, k=4, seed=0)
    assert labels.shape == (50,) and labels.dtype == np.int64
    assert set(labels.tolist()) == {0, 1, 2, 3}
    two_rows = np.array([[0.0], [1.0]] * 5)
    assert set(kmeans_pseudo_labels(two_rows, k=10).tolist()) == {0, 1}
    assert np.array_equal(kmeans_pseudo_labels(targets, k=4, seed=0), labels)


@pytest.mark.parametrize("name", ["otdd_exact", "otdd_gaussian", "mmd", "l2"])
def test_state_dict_round_trip_through_checkpoint_format_resumes_bit_identically(name, tmp_path):
    """The warm-start store changes results within the solver tolerance, so a resumed run restores it."""
    source = labelled(0, n=60, scale=0.5)
    running, fresh = build_objective(name, *source), build_objective(name, *source)
    zeros = torch.zeros(32, dtype=torch.long)
    for step in range(3):
        running(labelled(3, n=32, shift=1.0 + 0.1 * step, scale=0.5)[0], zeros)
    running(labelled(4, n=30, shift=0.5, scale=0.5)[0], torch.arange(30) % 2)  # a multi-label entry too
    save_state(tmp_path, "objective", {"objective": running.state_dict()})  # safetensors + JSON, no pickle
    fresh.load_state_dict(load_state(tmp_path, "objective")["objective"])
    for labels in (zeros, torch.arange(32) % 2):
        x1 = labelled(3, n=32, shift=1.35, scale=0.5)[0].requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        v1, v2 = running(x1, labels), fresh(x2, labels)
        v1.backward()
        v2.backward()
        assert float(v1.detach()) == float(v2.detach())
        assert torch.equal(x1.grad, x2.grad)


def test_batched_sinkhorn_with_padding_matches_separate_solves():
    g = torch.Generator().manual_seed(1)
    clouds = [(torch.randn(n, 3, generator=g), torch.randn(m, 3, generator=g) + 1) for n, m in ((7, 9), (12, 5), (10, 10))]
    rows, cols = max(len(x) for x, _ in clouds), max(len(y) for _, y in clouds)
    cost = torch.full((3, rows, cols), float("inf"))
    a, b = torch.zeros(3, rows), torch.zeros(3, cols)
    for k, (x, y) in enumerate(clouds):
        cost[k, :len(x), :len(y)] = squared_distances(x, y)
        a[k, :len(x)], b[k, :len(y)] = 1 / len(x), 1 / len(y)
    batched = sinkhorn_batched(cost, a, b, 0.1, rtol=1e-9)
    assert torch.isfinite(batched.plan).all()
    for k, (x, y) in enumerate(clouds):
        alone = sinkhorn(squared_distances(x, y), a[k, :len(x)], b[k, :len(y)], 0.1, rtol=1e-9)
        assert float(batched.values[k]) == pytest.approx(alone.value, rel=1e-5)
        assert float(batched.values[k]) == pytest.approx(pot_entropic(squared_distances(x, y).double().numpy(), 0.1),
                                                         rel=1e-4)
        assert float(batched.plan[k, len(x):].abs().sum() + batched.plan[k, :, len(y):].abs().sum()) == 0.0


@pytest.mark.parametrize("n, spread", [(20, 1.0), (60, 3.0)])
def test_symmetric_sinkhorn_matches_pot(n, spread):
    x = spread * torch.randn(n, 4, generator=torch.Generator().manual_seed(n))
    cost = squared_distances(x, x)
    a = torch.full((n,), 1.0 / n)
    ours = sinkhorn(cost, a, a, 0.1, rtol=1e-8, symmetric=True)
    assert ours.value == pytest.approx(pot_entropic(cost.double().numpy(), 0.1), rel=1e-5)
    assert torch.allclose(ours.plan.sum(1), a, atol=1e-5 / n)


def test_entropic_label_distance_is_close_to_emd_and_matches_pot():
    """Label W^2 by debiased Sinkhorn at eps 0.1 vs network simplex (clouds like the benchmark's, smaller)."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 32, generator=g)
    clouds = [means[k] + 0.5 * torch.randn(40 + 10 * k, 32, generator=g) for k in range(3)]
    target = [torch.randn(32, generator=g) + 0.5 * torch.randn(30, 32, generator=g)]
    entropic = LabelCosts("exact", target, label_solver="sinkhorn", rtol=1e-8).between(
        LabelCosts("exact", clouds, label_solver="sinkhorn", rtol=1e-8))
    emd = LabelCosts("exact", target, label_solver="emd").between(LabelCosts("exact", clouds, label_solver="emd"))
    assert torch.allclose(entropic, emd, rtol=2e-3)
    for j, c in enumerate(clouds):
        assert float(entropic[0, j]) == pytest.approx(debiased_pot(target[0].double().numpy(), c.double().numpy(), 0.1),
                                                      rel=1e-5)
        assert float(emd[0, j]) == pytest.approx(exact_w2(target[0], c), rel=1e-12)


def test_batched_bures_matches_the_pairwise_formula():
    g = torch.Generator().manual_seed(0)
    clouds = [torch.randn(n, 6, generator=g) * (1 + k) for k, n in enumerate((4, 9, 5))]
    costs = LabelCosts("gaussian", clouds)
    table = costs.between(costs, symmetric=True)
    for i in range(3):
        for j in range(3):
            if i != j:
                p, q = GaussianStats.of(clouds[i]), GaussianStats.of(clouds[j])
                sp = torch.linalg.eigh(q.cov)
                root = sp.eigenvectors @ torch.diag(sp.eigenvalues.clamp_min(0).sqrt()) @ sp.eigenvectors.T
                inner = torch.linalg.eigvalsh(root @ p.cov @ root).clamp_min(0).sqrt().sum()
                expected = float(((p.mean - q.mean) ** 2).sum() + p.trace + q.trace - 2 * inner)
                assert float(table[i, j]) == pytest.approx(expected, rel=1e-6, abs=1e-9)
                assert gaussian_w2(p, q) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_unknown_label_solver_is_rejected():
    with pytest.raises(ValueError):
        build_objective("otdd_exact", *labelled(0), label_solver="simplex")
