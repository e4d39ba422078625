"""A stand-in for core.run that follows its contract (events, metrics, progress, checkpoints,
should_stop, resume_from), fast and torch-free, for worker tests that are about the worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.callbacks import Callback, CallbackList, CheckpointSaved, Event, MetricPoint, Progress


@dataclass(frozen=True)
class FakeResult:
    status: str
    summary: dict[str, Any]
    checkpoint_dir: Path
    step: int


@dataclass
class FakeRunner:
    steps: int = 6
    checkpoint_every: int = 2
    step_seconds: float = 0.0
    fail_with: BaseException | None = None
    on_step: Callable[[int], None] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, config: Any, train_path: Path, out_dir: Path, *, validation_path: Path | None = None,
                 callbacks: Sequence[Callback] = (), resume_from: Path | None = None) -> FakeResult:
        cb = CallbackList(list(callbacks))
        out_dir.mkdir(parents=True, exist_ok=True)
        start = json.loads((resume_from / "state.json").read_text())["step"] if resume_from else 0
        self.calls.append({"train": train_path.read_bytes(), "validation": validation_path,
                           "resume_step": start if resume_from else None, "method": config.method})
        cb.on_event(Event("setup", f"fake run from step {start}", data={"path": train_path}))
        if self.fail_with is not None:
            raise self.fail_with
        for step in range(start + 1, self.steps + 1):
            time.sleep(self.step_seconds)
            if self.on_step is not None:
                self.on_step(step)
            cb.on_metric(MetricPoint("loss", 1.0 / step, step, "train", epoch=0))
            cb.on_progress(Progress("refine", step, self.steps, eta_seconds=float(self.steps - step)))
            if step % self.checkpoint_every == 0:
                cb.on_checkpoint(CheckpointSaved(self._save(out_dir / f"step-{step}", step), step, 0, "refine",
                                                 {"loss": 1.0 / step}))
            if cb.should_stop():
                path = self._save(out_dir / "stopped", step)
                cb.on_checkpoint(CheckpointSaved(path, step, 0, "refine", {}))
                return FakeResult("stopped", {}, path, step)
        final = self._save(out_dir / "checkpoint", self.steps)
        summary = {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.75}}
        cb.on_metric(MetricPoint("accuracy", 0.75, self.steps, "final_test"))
        cb.on_checkpoint(CheckpointSaved(final, self.steps, 0, "evaluate", summary["test"], final=True))
        return FakeResult("completed", summary, final, self.steps)

    @staticmethod
    def _save(directory: Path, step: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.safetensors").write_bytes(b"weights-%d" % step)
        (directory / "manifest.json").write_text(json.dumps({"step": step}))
        (directory / "state.json").write_text(json.dumps({"step": step}))
        return directory
