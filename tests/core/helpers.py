"""Assertions shared by the core tests."""

from pathlib import Path

import torch
from safetensors.torch import load_file

import core
from core.callbacks import Callback, Event, Progress, StopRequest
from core.config import JobConfig
from core.result import RunResult


def assert_same_weights(expected_dir: Path, actual_dir: Path) -> None:
    """Two checkpoints hold bit-identical weights (exact resume leaves no tolerance)."""
    a = load_file(str(Path(expected_dir) / "model.safetensors"))
    b = load_file(str(Path(actual_dir) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{actual_dir.name}: {key}")


class StepLog(Callback):
    """Every optimizer step and event a run reports; asks the run to stop after step `stop_at`, if given."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.events: list[Event] = []
        self.stop_at = stop_at

    def on_progress(self, progress: Progress) -> None:
        self.steps.append(progress.step)

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def stop_reason(self) -> StopRequest | None:
        return "cancelled" if self.stop_at is not None and bool(self.steps) and self.steps[-1] == self.stop_at else None


def assert_resumes_exactly(config: JobConfig, data: Path, out_dir: Path, stop_step: int,
                           straight: RunResult) -> RunResult:
    """Stop a run after `stop_step`, resume it from its checkpoint, and check that it really resumed.

    Identical weights alone cannot tell a resume from a restart (the run re-seeds from the config, so
    a restart from step 0 lands on the same weights): the resumed run must also report that it
    restored step `stop_step`, and step exactly from `stop_step + 1` to the uninterrupted run's end.
    """
    stopped = core.run(config, data, out_dir, callbacks=[StepLog(stop_at=stop_step)])
    assert stopped.reason == "cancelled" and stopped.step == stop_step
    torch.manual_seed(999)  # a resumed process starts with other RNG state; the checkpoint restores it
    log = StepLog()
    resumed = core.run(config, data, out_dir, resume_from=stopped.checkpoint_dir, callbacks=[log])
    assert [e.data["resumed_from_step"] for e in log.events if "resumed_from_step" in e.data] == [stop_step]
    assert log.steps == list(range(stop_step + 1, straight.step + 1))
    assert resumed.reason == "completed" and resumed.step == straight.step
    assert_same_weights(straight.checkpoint_dir, resumed.checkpoint_dir)
    return resumed
