"""The job's own classical baseline, so a user sees at once whether cross-modal fine-tuning paid off.

A linear model on the flattened inputs (already normalised on train by `core.data.prepare`, then
standardised per feature): logistic regression for classification, ridge for regression, and ridge
scores for multilabel / dense_binary (their metrics only rank the scores, and a ridge solve covers
every output at once where one logistic fit per output would not fit the time cap); 1-NN joins the
candidates when the train split is small. The regularisation (and 1-NN or not) is selected on the
validation split with the job's selection metric, or by 3-fold cross-validation on train when the
job has no validation split; the chosen model is evaluated once on test with the model's own metric
functions (`core.modeling.tasks.compute_metrics`), so the numbers are comparable.

A time cap bounds it: train rows and features are subsampled (seeded) so that the planned fits fit
in the cap, the solvers' iterations are limited, and no further candidate starts once the cap would
be passed. The result says what it did.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.preprocessing import StandardScaler

from core.config import SELECTION_METRIC, TaskType
from core.data.prepare import PreparedData, Split
from core.modeling.tasks import compute_metrics

LOGISTIC_C = (1e-4, 1e-3, 0.01, 0.1, 1.0)
RIDGE_ALPHA = (1.0, 10.0, 100.0, 1000.0)
NEAREST_NEIGHBOUR_ROWS = 2000
"""1-NN is a candidate up to this many train rows: beyond it, a linear model is the fairer baseline
and the distance matrix grows too costly."""
MAX_ITER = 200
MAX_FEATURES = 4096
CV_FOLDS = 3
MIN_ROWS = 100
ROW_FEATURES_PER_SECOND = 5e6
"""Train rows x features one fit gets through per second of the cap: lbfgs logistic regression on one
CPU thread did 6e6 to 4e8 (100 to 2 classes, 5 to 30 iterations); the clock stops further candidates
where a slow solve overruns the estimate."""

Estimator = Any  # an sklearn estimator: fit(x, y), predict(x)


@dataclass(frozen=True)
class Candidate:
    method: str
    params: dict[str, float]
    build: Callable[[], Estimator]


@dataclass
class BaselineResult:
    """What the baseline did and scored; `validation` is None when the job has no validation split,
    `test` None when it has no test split. Every metric is lower-is-better, as the model's are."""

    method: str
    params: dict[str, float]
    selection: str
    metric: str
    validation: dict[str, float] | None
    test: dict[str, float] | None
    seconds: float
    train_rows: int
    train_rows_used: int
    features: int
    features_used: int
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidates(task: TaskType, train_rows: int) -> list[Candidate]:
    """The models tried for `task`, cheapest (most regularised) first, so a cut by the time cap keeps
    the fits most likely to generalise."""
    if task == TaskType.classification:
        linear = [Candidate("logistic_regression", {"C": c},
                            lambda c=c: LogisticRegression(C=c, max_iter=MAX_ITER)) for c in LOGISTIC_C]
        neighbour = Candidate("1-nn", {}, lambda: KNeighborsClassifier(n_neighbors=1))
    else:
        linear = [Candidate("ridge", {"alpha": a}, lambda a=a: Ridge(alpha=a)) for a in reversed(RIDGE_ALPHA)]
        neighbour = Candidate("1-nn", {}, lambda: KNeighborsRegressor(n_neighbors=1))
    ranked = task in (TaskType.multilabel, TaskType.dense_binary)  # 1-NN's 0/1 scores rank poorly
    return linear + ([neighbour] if train_rows <= NEAREST_NEIGHBOUR_ROWS and not ranked else [])


def flatten(split: Split) -> tuple[np.ndarray, np.ndarray]:
    return split.x.reshape(len(split), -1).numpy(), split.y.numpy()


def predict(estimator: Estimator, task: TaskType, x: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    """Predictions shaped and typed as the model's decoded ones (class ids, scores or values)."""
    prediction = estimator.predict(x)
    return prediction if task == TaskType.classification else prediction.reshape((len(x),) + target_shape)


def fit(candidate: Candidate, x: np.ndarray, y: np.ndarray, task: TaskType) -> tuple[Estimator, bool]:
    """Fit one candidate; also whether its solver stopped at MAX_ITER without converging."""
    target = y if task == TaskType.classification else y.reshape(len(y), -1)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator = candidate.build().fit(x, target)
    return estimator, any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _score(metrics: dict[str, float], metric: str) -> float:
    value = metrics.get(metric, float("nan"))
    return value if math.isfinite(value) else float("inf")


class _Clock:
    """Seconds since the start, and whether another fit as long as the longest so far still fits the cap."""

    def __init__(self, cap: float) -> None:
        self.cap, self.start, self.longest = cap, time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def timed(self, work: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        value = work()
        self.longest = max(self.longest, time.perf_counter() - began)
        return value

    def room_for(self, fits: int) -> bool:
        return self.elapsed() + fits * self.longest <= self.cap


def _subsample(x: np.ndarray, y: np.ndarray, cap: float, fits: int, rng: np.random.Generator,
               notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Seeded feature and row subsets small enough for `fits` fits within `cap` seconds."""
    rows, width = x.shape
    features = None
    if width > MAX_FEATURES:
        features = np.sort(rng.choice(width, MAX_FEATURES, replace=False))
        x = x[:, features]
        notes.append(f"{MAX_FEATURES} of {width} features (random, seeded)")
    keep = max(MIN_ROWS, int(cap * ROW_FEATURES_PER_SECOND / (x.shape[1] * fits)))
    if rows > keep:
        chosen = np.sort(rng.choice(rows, keep, replace=False))
        x, y = x[chosen], y[chosen]
        notes.append(f"{keep} of {rows} train rows (random, seeded) to fit {fits} fits in {cap:g} s")
    return x, y, features


def fit_baseline(data: PreparedData, seconds: float, seed: int = 0, metric: str | None = None) -> BaselineResult:
    """Fit, select and evaluate the baseline on `data`'s splits within about `seconds`."""
    clock, task, notes = _Clock(seconds), data.task, []
    metric = metric or SELECTION_METRIC[task]
    x_all, y_all = flatten(data.train)
    tried = candidates(task, len(x_all))
    cross_validate = data.validation is None
    fits = len(tried) * CV_FOLDS + 1 if cross_validate else len(tried)  # CV refits the chosen one on all rows
    x, y, features = _subsample(x_all, y_all, seconds, fits, np.random.default_rng(seed), notes)
    scaler = StandardScaler().fit(x)
    x = scaler.transform(x)

    def design(split: Split) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = flatten(split)
        return scaler.transform(xs if features is None else xs[:, features]), ys

    def evaluate(estimator: Estimator, xs: np.ndarray, ys: np.ndarray) -> dict[str, float]:
        return compute_metrics(task, predict(estimator, task, xs, data.target_shape), ys)

    validation = None if cross_validate else design(data.validation)

    def on_validation(candidate: Candidate) -> tuple[float, Estimator | None, bool]:
        estimator, capped = fit(candidate, x, y, task)
        return _score(evaluate(estimator, *validation), metric), estimator, capped

    def by_cross_validation(candidate: Candidate) -> tuple[float, Estimator | None, bool]:
        scores, capped = [], False
        for fit_rows, held in KFold(CV_FOLDS, shuffle=True, random_state=seed).split(x):
            estimator, stopped = fit(candidate, x[fit_rows], y[fit_rows], task)
            scores.append(_score(evaluate(estimator, x[held], y[held]), metric))
            capped |= stopped
        return float(np.mean(scores)), None, capped

    select = by_cross_validation if cross_validate else on_validation
    scored: list[dict[str, Any]] = []
    best, final = 0, None
    for index, candidate in enumerate(tried):
        if index and not clock.room_for(1 + cross_validate):
            notes.append(f"time cap: {len(tried) - index} of {len(tried)} candidates not tried")
            break
        score, estimator, capped = clock.timed(lambda candidate=candidate: select(candidate))
        scored.append({"method": candidate.method, "params": candidate.params, "score": score})
        if capped:
            notes.append(f"{candidate.method} {candidate.params} stopped at {MAX_ITER} iterations")
        if score < scored[best]["score"] or index == 0:
            best, final = index, estimator
    if final is None:
        final, _ = fit(tried[best], x, y, task)
    return BaselineResult(
        method=tried[best].method, params=tried[best].params,
        selection=(f"{metric} by {CV_FOLDS}-fold cross-validation on train (the job has no validation split)"
                   if cross_validate else f"{metric} on the validation split"),
        metric=metric, validation=None if validation is None else evaluate(final, *validation),
        test=evaluate(final, *design(data.test)) if data.test is not None else None,
        seconds=round(clock.elapsed(), 3), train_rows=len(x_all), train_rows_used=len(x),
        features=x_all.shape[1], features_used=x.shape[1], candidates=scored, notes=notes)


def comparison(summary: dict[str, Any], baseline: dict[str, Any]) -> str:
    """One line setting the model's selection metric beside the baseline's, on test (on validation when
    the job has no test split), and saying which is better (lower is)."""
    split = "test" if baseline.get("test") is not None else "validation"
    metric = baseline["metric"]
    ours, theirs = (summary.get(split) or {}).get(metric), (baseline.get(split) or {}).get(metric)
    params = ", ".join(f"{key}={value:g}" for key, value in baseline["params"].items())
    name = f"{baseline['method']}({params})" if params else baseline["method"]
    if ours is None or theirs is None:
        return f"baseline {name}: no {split} {metric} to compare with the model's"
    verdict = "model better" if ours < theirs else "baseline better" if theirs < ours else "tie"
    return (f"{split} {metric}: model {ours:.4g} vs baseline {name} {theirs:.4g} "
            f"({verdict}; baseline took {baseline['seconds']:.1f} s)")
