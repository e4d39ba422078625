"""The run: what every recipe shares while it trains, and the one owner of where training stands.

It holds model, data and device, and owns the position, every random stream (through
`core.training.streams`), checkpoints and resume, progress with its ETA, and stopping. Recipes
(core/methods/*) own their stages and loops and walk them through it; components never see it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from core.callbacks import CallbackList, CheckpointSaved, Event, Level, MetricPoint, Progress, Stage, StopRequest
from core.checkpoint import build_manifest, save_model
from core.config import JobConfig
from core.data.prepare import PreparedData
from core.modeling.bodies import Body
from core.modeling.model import CrossModalModel, ModelSpec
from core.training import streams
from core.training.state import load_state, save_state

TRAINER_STATE = "trainer_state"
PRE_REFINE_SHARE = 0.5  # of a time budget: the most the stages before refine may use, so refine keeps time


class Stateful(Protocol):
    """What `Run.track_state` keeps: optimizers, schedulers, modules, the OTDD warm-start cache."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class Position:
    """Where training stands; enough, with weights and tracked state, to resume exactly."""

    stage: Stage = "setup"
    stage_epoch: int = 0  # epochs (or one-step iterations) finished in the current stage
    batch: int = 0  # batches consumed in the current epoch
    step: int = 0  # optimizer steps over the whole run (progress, metrics)
    best_metric: float = float("inf")
    best_epoch: int = -1
    stage_began_at: float = 0.0  # training seconds elapsed (`Run.elapsed`) when the current stage began


class StopRequested(Exception):
    """Raised by `Run.step_done()` once a stop request is checkpointed; `core.run` returns its reason."""

    def __init__(self, reason: StopRequest, checkpoint: Path) -> None:
        super().__init__(f"{reason}; checkpoint at {checkpoint}")
        self.reason, self.checkpoint = reason, checkpoint


@dataclass
class Run:
    config: JobConfig
    data: PreparedData
    spec: ModelSpec
    model: CrossModalModel
    body: Body
    device: torch.device
    out_dir: Path
    callbacks: CallbackList
    total_steps: int
    final_stage_from: int = 0  # the step the last stage (refine) starts after
    position: Position = field(default_factory=Position)
    best_state: dict[str, torch.Tensor] | None = None
    tracked: dict[str, Stateful] = field(default_factory=dict)
    pending_states: dict[str, Any] = field(default_factory=dict)  # restored, not yet claimed by track_state
    pending_rng: dict[str, Any] | None = None  # restored just before the resumed loop continues
    stage_clock: tuple[float, int] | None = None  # (time, step) when the current stage began stepping
    model_roots: tuple[Path, ...] = ()  # the deployment's model roots: `proxy: auto` looks in <root>/proxies
    time_budget: float | None = None  # seconds of training the job may use (`training.time_budget_seconds`)
    elapsed_before: float = 0.0  # seconds used before this process resumed the job (from the checkpoint)
    started: float = field(default_factory=time.monotonic)  # when this process began working on the job
    out_of_time_in: set[str] = field(default_factory=set)  # stages a deadline has ended (reported once)

    # ---- reporting -------------------------------------------------------------------------
    def event(self, message: str, level: Level = "info", **data: Any) -> None:
        self.callbacks.on_event(Event(stage=self.position.stage, message=message, level=level, data=data))

    def metric(self, key: str, value: float, split: str, epoch: int | None = None) -> None:
        self.callbacks.on_metric(MetricPoint(key=key, value=float(value), step=self.position.step,
                                             split=split, epoch=epoch))

    # ---- stages and position ---------------------------------------------------------------
    def has_finished(self, stage: Stage, order: tuple[Stage, ...]) -> bool:
        """Whether a resumed run is already past `stage` of the stages `order` (refine comes after all)."""
        at = self.position.stage
        if at == "setup":
            return False
        return at not in order or order.index(at) > order.index(stage)

    def enter_stage(self, stage: Stage, message: str) -> None:
        """Start (or, when resuming, re-enter) a stage; call right before the stage's loop."""
        if self.position.stage != stage:
            self.position.stage, self.position.stage_epoch, self.position.batch = stage, 0, 0
            self.position.stage_began_at = self.elapsed()
        if self.pending_rng is not None:  # set RNG last, so stage set-up cannot shift the stream
            torch.set_rng_state(self.pending_rng["rng"])
            if "cuda_rng" in self.pending_rng and self.device.type == "cuda":
                torch.cuda.set_rng_state_all(self.pending_rng["cuda_rng"])
            self.pending_rng = None
        self.event(message, stage_started=stage)
        self.stage_clock = (time.monotonic(), self.position.step)

    def finish_epoch(self) -> int:
        """Mark the current epoch (or iteration) of the stage done; returns the one that finished."""
        finished = self.position.stage_epoch
        self.position.stage_epoch, self.position.batch = finished + 1, 0
        return finished

    # ---- random streams --------------------------------------------------------------------
    def epoch_generator(self, epoch: int, offset: int = 0) -> torch.Generator:
        return streams.epoch_generator(self.config.training.seed, epoch, offset)

    def batch_generator(self, epoch: int, batch: int) -> torch.Generator:
        return streams.batch_generator(self.config.training.seed, epoch, batch)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return streams.epoch_order(self.config.training.seed, epoch, len(self.data.train))

    # ---- stepping --------------------------------------------------------------------------
    def step_done(self) -> None:
        """Call after each optimizer step: progress, and a checkpoint + stop when one was requested."""
        self.position.step += 1
        self.callbacks.on_progress(Progress(self.position.stage, self.position.step, self.total_steps, self.eta()))
        every = self.config.checkpoint.every_steps
        if every and self.position.step % every == 0:
            self.save_checkpoint()
        reason = self.callbacks.stop_reason()
        if reason is not None:
            raise StopRequested(reason, self.save_checkpoint())

    def eta(self) -> float | None:
        """Seconds left at the current stage's own rate. None until a step of this stage has been timed
        (set-up and an earlier stage's steps say nothing about it), and None before the last stage,
        whose steps, still to come, no step so far has timed. A time budget's deadline bounds it."""
        if self.stage_clock is None or self.stage_clock[1] < self.final_stage_from:
            return None
        began, first_step = self.stage_clock
        done = self.position.step - first_step
        if done <= 0:
            return None
        by_rate = (time.monotonic() - began) / done * max(0, self.total_steps - self.position.step)
        deadline = self.stage_deadline()
        return by_rate if deadline is None else min(by_rate, max(0.0, deadline - self.elapsed()))

    # ---- wall-clock budget -----------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds the job has worked, set-up included, over every process that ran it."""
        return self.elapsed_before + time.monotonic() - self.started

    def stage_deadline(self) -> float | None:
        """Elapsed seconds at which the current stage must end: the whole budget for refine, a share of it
        for the stages before (ORCA alignment, MoNA, contrastive), so that refine always gets time."""
        if self.time_budget is None:
            return None
        return self.time_budget if self.position.stage == "refine" else PRE_REFINE_SHARE * self.time_budget

    def time_progress(self) -> float:
        """Share in [0, 1] of the current stage's time, from its start to its deadline (0 without a budget)."""
        deadline = self.stage_deadline()
        if deadline is None:
            return 0.0
        began = self.position.stage_began_at
        if deadline <= began:
            return 1.0
        return min(1.0, max(0.0, (self.elapsed() - began) / (deadline - began)))

    def progress(self, steps_done: int, steps_total: int) -> float:
        """The current stage's progress in [0, 1]: its steps or its time, whichever is further. The one
        measure schedules (lr, patch replacement) anneal on, so that a deadline ends them like a last step."""
        by_steps = min(1.0, steps_done / steps_total) if steps_total > 0 else 1.0
        return max(by_steps, self.time_progress())

    def out_of_time(self) -> bool:
        """Whether the current stage's deadline has passed; the first time, an event says where it ended."""
        deadline = self.stage_deadline()
        if deadline is None or self.elapsed() < deadline:
            return False
        stage = self.position.stage
        if stage not in self.out_of_time_in:
            self.out_of_time_in.add(stage)
            elapsed = self.elapsed()
            self.event(f"time budget: {stage} ends at step {self.position.step} after {elapsed:.1f} s "
                       f"(deadline {deadline:.1f} s of {self.time_budget:g} s)", level="warning",
                       time_budget_stage=stage, time_budget_step=self.position.step,
                       elapsed_seconds=round(elapsed, 3), deadline_seconds=deadline)
        return True

    def autocast(self) -> torch.autocast:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.training.precision)
        enabled = self.device.type == "cuda" and dtype is not None
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32, enabled=enabled)

    # ---- checkpoints -----------------------------------------------------------------------
    def manifest(self, **extra: Any) -> dict[str, Any]:
        return build_manifest(self.config, self.spec, self.body.model.config.to_dict(), self.data.normalisation,
                              self.data.sha256, **extra)

    def save_checkpoint(self, metrics: dict[str, float] | None = None) -> Path:
        """A resumable checkpoint: current weights, trainer state and the best validated weights so far."""
        pos = self.position
        directory = self.out_dir / "checkpoints" / f"step-{pos.step:07d}-{pos.stage}-{pos.stage_epoch}-{pos.batch}"
        save_model(directory, self.model, self.manifest(step=pos.step, stage=pos.stage))
        state = {"position": vars(pos).copy(), "elapsed_seconds": self.elapsed(), "rng": torch.get_rng_state(),
                 "optimizers": {name: tracked.state_dict() for name, tracked in self.tracked.items()}}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        save_state(directory, TRAINER_STATE, state)
        if self.best_state is not None:
            save_model(directory / "best", self.model, self.manifest(step=pos.step, stage=pos.stage),
                       state_dict=self.best_state)
        self.callbacks.on_checkpoint(CheckpointSaved(path=directory, step=pos.step, epoch=pos.stage_epoch,
                                                     stage=pos.stage, metrics=metrics or {}))
        self._prune_checkpoints(keep=self.config.checkpoint.keep_last)
        return directory

    def _prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest `keep` resumable checkpoints (callbacks have already copied them)."""
        saved = sorted((self.out_dir / "checkpoints").iterdir())  # names start with the zero-padded step
        for old in saved[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, directory: Path) -> None:
        """Load weights, position and RNG; tracked states are applied when the recipe tracks them."""
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")))
        state = load_state(directory, TRAINER_STATE)
        self.position = Position(**state["position"])
        # this process's own time already counts from `started`; checkpoints from before budgets held none
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
        self.stage_clock = None  # the recipe's enter_stage restarts it
        self.pending_rng = {k: state[k] for k in ("rng", "cuda_rng") if k in state}
        self.pending_states = state["optimizers"]
        best = directory / "best" / "model.safetensors"
        self.best_state = load_file(str(best)) if best.exists() else None

    def track_state(self, name: str, stateful: Stateful) -> None:
        """Save `stateful`'s state in every checkpoint under `name`; when resuming, restore it now."""
        if name in self.pending_states:
            stateful.load_state_dict(self.pending_states.pop(name))
        self.tracked[name] = stateful
