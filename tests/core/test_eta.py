"""A job's ETA is the current stage's own rate times the steps left: none until a step of that stage
has been timed, none before the last stage (whose steps no earlier step has timed), and set-up time
never counts (a slow proxy load once made a first ETA read 18h25m)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import core
from core.callbacks import Callback, CallbackList, Progress
from core.config import parse_config
from core.training import run as run_module
from core.training.run import Run


class Progresses(Callback):
    def __init__(self) -> None:
        self.seen: list[Progress] = []

    def on_progress(self, progress: Progress) -> None:
        self.seen.append(progress)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_eta_counts_only_timed_steps_of_the_last_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock, progresses = Clock(), Progresses()
    monkeypatch.setattr(run_module, "time", clock)
    config = SimpleNamespace(checkpoint=SimpleNamespace(every_steps=0))  # step_done reads only this
    run = Run(config=config, data=None, spec=None, model=None, body=None, device=torch.device("cpu"),
              out_dir=tmp_path, callbacks=CallbackList([progresses]), total_steps=110, final_stage_from=10)
    clock.now = 1000.0  # set-up: building the model, embedding the proxy
    run.enter_stage("align", "align")
    for _ in range(10):
        clock.now += 5.0
        run.step_done()
    clock.now += 600.0  # the alignment's end: checkpoint, evaluation, building the refine optimizer
    run.enter_stage("refine", "refine")
    for _ in range(2):
        clock.now += 2.0
        run.step_done()
    assert [p.eta_seconds for p in progresses.seen[:10]] == [None] * 10
    assert [p.eta_seconds for p in progresses.seen[10:]] == [2.0 * 99, 2.0 * 98]


def test_a_real_orca_run_has_no_eta_while_it_aligns(classification_1d: Path, tmp_path: Path) -> None:
    progresses = Progresses()
    config = parse_config({"method": "orca", "body": {"name": "tiny-bert"},
                           "alignment": {"objective": "otdd_exact", "epochs": 2, "maxsamples": 32, "proxy": "digits"},
                           "training": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "seed": 0}})
    assert core.run(config, classification_1d, tmp_path / "run", callbacks=[progresses]).reason == "completed"
    align = [p for p in progresses.seen if p.stage == "align"]
    refine = [p for p in progresses.seen if p.stage == "refine"]
    assert len(align) == 2 and all(p.eta_seconds is None for p in align)
    assert refine and all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in refine)
    assert refine[-1].eta_seconds == 0.0
