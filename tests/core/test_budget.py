"""The training budget: `epochs: auto` picks the refine steps from the data size, an integer still means
epochs, and `time_budget_seconds` ends a job at its deadline with the lr annealed and the job complete."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import core
from core import runner
from core.callbacks import Callback, CallbackList, Event, MetricPoint, Progress
from core.config import TrainingConfig, parse_config
from core.errors import ConfigError
from core.training import run as run_module
from core.training.budget import MAX_AUTO_STEPS, MIN_AUTO_STEPS, refine_budget
from core.training.optim import build_scheduler
from core.training.run import Run
from core.training.state import load_state
from tests.core.helpers import StepLog

# ---- choosing the step count -------------------------------------------------------------------


def test_auto_is_the_default_and_takes_the_floor_on_a_tiny_set() -> None:
    assert TrainingConfig().epochs == "auto"
    budget = refine_budget(TrainingConfig(batch_size=32), 96)  # 3 steps an epoch: 3 epochs would be 9 steps
    assert (budget.steps, budget.epochs, budget.steps_per_epoch) == (MIN_AUTO_STEPS, 100, 3)
    assert "auto" in budget.rule


@pytest.mark.parametrize(("train_size", "steps", "epochs"), [
    (6_400, 600, 3),  # 200 steps an epoch: 3 epochs, above the floor
    (64_000, MAX_AUTO_STEPS, 2),  # 3 epochs would be 6000 steps: capped, fewer epochs
    (320_000, 10_000, 1),  # one epoch is over the cap: never less than one epoch
])
def test_auto_scales_with_the_train_set(train_size: int, steps: int, epochs: int) -> None:
    budget = refine_budget(TrainingConfig(batch_size=32), train_size)
    assert (budget.steps, budget.epochs) == (steps, epochs)


def test_an_integer_still_means_epochs_and_max_steps_still_caps() -> None:
    assert (refine_budget(TrainingConfig(epochs=2, batch_size=32), 96).steps, 2) == (6, 2)
    capped = refine_budget(TrainingConfig(epochs="auto", batch_size=32, max_steps=50), 96)
    assert capped.steps == 50 and "max_steps" in capped.rule


@pytest.mark.parametrize("junk", ["many", "AUTO", -1, 10**9, 2.5, True, None])
def test_epochs_rejects_junk_naming_the_field(junk: object) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"training": {"epochs": junk}})
    assert error.value.field == "training.epochs"


@pytest.mark.parametrize("junk", [0, -5, "soon", 10**12])
def test_time_budget_rejects_junk_naming_the_field(junk: object) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"training": {"time_budget_seconds": junk}})
    assert error.value.field == "training.time_budget_seconds"


# ---- the deadline --------------------------------------------------------------------------------


class Clock:
    """A fake `time` module: time moves only when a test ticks it, so deadlines fall at known steps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Ticks(Callback):
    """Each optimizer step takes one second of the fake clock; keeps events and train-lr points."""

    def __init__(self, clock: Clock, stop_at: int | None = None) -> None:
        self.clock, self.log = clock, StepLog(stop_at)
        self.lrs: list[float] = []
        self.etas: dict[int, float | None] = {}

    def on_progress(self, progress: Progress) -> None:
        self.clock.now += 1.0
        self.log.on_progress(progress)
        self.etas[progress.step] = progress.eta_seconds

    def on_event(self, event: Event) -> None:
        self.log.on_event(event)

    def on_metric(self, point: MetricPoint) -> None:
        if point.key == "lr" and point.split == "train":
            self.lrs.append(point.value)

    def stop_reason(self):  # noqa: ANN201 - StepLog's
        return self.log.stop_reason()

    def data(self, key: str) -> list[dict]:
        return [e.data for e in self.log.events if key in e.data]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(run_module, "time", fake)
    monkeypatch.setattr(runner, "time", fake)
    return fake


def test_the_lr_reaches_zero_at_the_deadline(clock: Clock, tmp_path: Path) -> None:
    config = SimpleNamespace(checkpoint=SimpleNamespace(every_steps=0))
    run = Run(config=config, data=None, spec=None, model=None, body=None, device=torch.device("cpu"),
              out_dir=tmp_path, callbacks=CallbackList([]), total_steps=1000, time_budget=100.0, started=0.0)
    clock.now = 20.0  # set-up; refine then has 80 s
    run.enter_stage("refine", "refine")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, TrainingConfig(warmup_fraction=0.0), 1000, run.time_progress)
    clock.now = 60.0  # half the refine time, 1 of 1000 steps: time leads
    optimizer.step()
    scheduler.step()
    assert run.progress(1, 1000) == pytest.approx(0.5)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5)
    clock.now = 100.0
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr()[0] == 0.0 and run.out_of_time() and run.eta() is None


def test_the_deadline_ends_refine_and_the_job_still_completes(clock: Clock, classification_1d: Path,
                                                               tmp_path: Path) -> None:
    config = parse_config({"method": "finetune", "body": {"name": "tiny-bert"},
                           "training": {"batch_size": 32, "lr": 1e-3, "time_budget_seconds": 20}})
    ticks = Ticks(clock)
    result = core.run(config, classification_1d, tmp_path / "run", callbacks=[ticks])
    assert result.reason == "completed" and result.step == 20  # auto wanted 300 steps; the deadline came first
    assert set(result.summary["test"]) and (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
    [chosen] = ticks.data("refine_steps")
    assert (chosen["refine_steps"], chosen["train_size"], chosen["batch_size"], chosen["steps_per_epoch"]) == (
        MIN_AUTO_STEPS, 86, 32, 3) and chosen["time_budget_seconds"] == 20
    [ended] = ticks.data("time_budget_stage")
    assert ended["time_budget_stage"] == "refine" and ended["time_budget_step"] == 20
    assert ended["elapsed_seconds"] == 20.0
    # the last logged lr was set one tick (1/20 of the time) before the deadline: 95% of the time is 285 of
    # 300 steps, 255 of the 270 after warm-up, so 5.6% of the peak lr is left (without the deadline: 94%)
    assert ticks.lrs[-1] == pytest.approx(1e-3 * 15 / 270)
    # the ETA is the deadline's, not the 300 - step seconds the auto step count would take (step n is
    # reported at n - 1 s: the fake clock ticks after each report)
    assert (ticks.etas[10], ticks.etas[20]) == (11.0, 1.0)


def test_stage_one_gets_at_most_half_the_budget(clock: Clock, classification_1d: Path, tmp_path: Path) -> None:
    config = parse_config({"method": "orca", "body": {"name": "tiny-bert"},
                           "alignment": {"objective": "l2", "epochs": 50, "maxsamples": 16, "proxy": "digits"},
                           "training": {"batch_size": 32, "time_budget_seconds": 20}})
    ticks = Ticks(clock)
    result = core.run(config, classification_1d, tmp_path / "run", callbacks=[ticks])
    assert result.reason == "completed" and result.step == 20
    assert [(d["time_budget_stage"], d["time_budget_step"]) for d in ticks.data("time_budget_stage")] == [
        ("align", 10), ("refine", 20)]


def test_a_resumed_job_keeps_its_elapsed_time(clock: Clock, classification_1d: Path, tmp_path: Path) -> None:
    """Fails if the checkpoint forgets the elapsed time: the resumed process, its clock at 0 again, would
    grant a fresh 20 s and end at step 27 instead of 20."""
    config = parse_config({"method": "finetune", "body": {"name": "tiny-bert"},
                           "training": {"batch_size": 32, "time_budget_seconds": 20}})
    stopped = core.run(config, classification_1d, tmp_path / "run", callbacks=[Ticks(clock, stop_at=7)])
    assert stopped.reason == "cancelled"
    assert load_state(stopped.checkpoint_dir, run_module.TRAINER_STATE)["elapsed_seconds"] == 7.0
    clock.now = 0.0  # a new process
    ticks = Ticks(clock)
    resumed = core.run(config, classification_1d, tmp_path / "run", callbacks=[ticks],
                       resume_from=stopped.checkpoint_dir)
    assert resumed.reason == "completed" and resumed.step == 20
    assert ticks.log.steps == list(range(8, 21))
    assert load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
