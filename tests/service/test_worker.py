"""The job lifecycle in-process, with a fake runner: what lands in the store for each outcome."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.callbacks import Callback, CallbackList, CheckpointSaved, Event, MetricPoint, Progress
from core.errors import DatasetError
from core.result import RunResult
from store.blobs import BlobStore
from store.db import session_scope
from store.models import Job, utcnow
from store.repositories import checkpoints, events, files, jobs, keys, metrics
from store.settings import Settings
from worker import stopping
from worker.checkpoint_tar import extract_checkpoint, tar_directory
from worker.reports import jsonable
from worker.lifecycle import execute_job


# A stand-in for core.run that follows its contract (events, metrics, progress, checkpoints,
# stop_reason, resume_from, a RunResult with its reason), fast and torch-free, for tests that are
# about the worker.
@dataclass
class FakeRunner:
    steps: int = 6
    checkpoint_every: int = 2
    step_seconds: float = 0.0
    fail_with: Exception | None = None
    on_step: Callable[[int], None] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, config: Any, train_path: Path, out_dir: Path, *, validation_path: Path | None = None,
                 callbacks: Sequence[Callback] = (), resume_from: Path | None = None,
                 model_roots: Sequence[Path] = ()) -> RunResult:
        cb = CallbackList(list(callbacks))
        out_dir.mkdir(parents=True, exist_ok=True)
        start = json.loads((resume_from / "state.json").read_text())["step"] if resume_from else 0
        self.calls.append({"train": train_path.read_bytes(), "validation": validation_path,
                           "resume_step": start if resume_from else None, "method": config.method,
                           "model_roots": list(model_roots)})
        cb.on_event(Event("setup", f"fake run from step {start}", data={"path": train_path}))
        if self.fail_with is not None:
            return RunResult("failed", error=self.fail_with)
        for step in range(start + 1, self.steps + 1):
            time.sleep(self.step_seconds)
            if self.on_step is not None:
                self.on_step(step)
            cb.on_metric(MetricPoint("loss", 1.0 / step, step, "train", epoch=0))
            cb.on_progress(Progress("refine", step, self.steps, eta_seconds=float(self.steps - step)))
            if step % self.checkpoint_every == 0:
                cb.on_checkpoint(CheckpointSaved(self._save(out_dir / f"step-{step}", step), step, 0, "refine",
                                                 {"loss": 1.0 / step}))
            reason = cb.stop_reason()
            if reason is not None:
                path = self._save(out_dir / "stopped", step)
                cb.on_checkpoint(CheckpointSaved(path, step, 0, "refine", {}))
                return RunResult(reason, step, path)
        final = self._save(out_dir / "checkpoint", self.steps)
        summary = {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.75}}
        cb.on_metric(MetricPoint("accuracy", 0.75, self.steps, "final_test"))
        cb.on_checkpoint(CheckpointSaved(final, self.steps, 0, "evaluate", summary["test"], final=True))
        return RunResult("completed", self.steps, final, summary)

    @staticmethod
    def _save(directory: Path, step: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.safetensors").write_bytes(b"weights-%d" % step)
        (directory / "manifest.json").write_text(json.dumps({"step": step}))
        (directory / "state.json").write_text(json.dumps({"step": step}))
        return directory


CONFIG = {"method": "orca", "body": {"name": "tiny-bert"}, "alignment": {"epochs": 1, "maxsamples": 16,
          "proxy": "digits"}, "training": {"epochs": 1, "batch_size": 8}}


@pytest.fixture(autouse=True)
def _poll_cancel_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stopping, "CANCEL_POLL_SECONDS", 0.0)


def submit(settings: Settings, owner: str = "alice", data: bytes = b"npz-bytes", **kw: object) -> tuple[str, str]:
    """A processed file (real blob) and a queued job on it; returns (owner_id, job_id)."""
    ref = BlobStore(settings.blob_root).write_stream([data])
    with session_scope() as s:
        owner_id = keys.get_or_create_owner(s, owner).id
        file_id = files.create(s, owner_id=owner_id, filename="train.npz", purpose="fine-tune", bytes=ref.size,
                               sha256=ref.sha256, status="processed").id
        job = jobs.create(s, owner_id=owner_id, model="tiny-bert", method="orca", config=CONFIG,
                          training_file_id=file_id, **kw)  # type: ignore[arg-type]
        return owner_id, job.id


def load(job_id: str) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_success_records_everything(backend_settings: Settings) -> None:
    owner_id, job_id = submit(backend_settings, data=b"my dataset")
    runner = FakeRunner()
    assert execute_job(job_id, backend_settings, runner) == "succeeded"
    job = load(job_id)
    assert job.status == "succeeded" and job.error is None and job.attempt == 1 and job.lease_owner is None
    assert job.progress == {"stage": "refine", "step": 6, "total_steps": 6, "fraction": 1.0, "eta_seconds": 0.0,
                            "steps_per_second": None}  # one write: no earlier one to measure a rate from
    assert runner.calls[0]["train"] == b"my dataset" and runner.calls[0]["resume_step"] is None
    with session_scope() as s:
        ckpts = checkpoints.list_checkpoints(s, owner_id, job_id)
        assert [c.step for c in ckpts if not c.final] == [6, 4, 2]
        final = [c for c in ckpts if c.final]
        assert len(final) == 1 and job.result == {"summary": {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.75}},
                                                  "checkpoint": final[0].id, "step": 6}
        losses = metrics.list_metrics(s, owner_id, job_id, key="loss").items
        assert [p.step for p in losses] == [1, 2, 3, 4, 5, 6]
        messages = [e.message for e in events.list_events(s, owner_id, job_id, limit=100).items]
    assert messages[0].startswith("attempt 1 started") and "fake run from step 0" in messages
    assert events_data_is_json(owner_id, job_id)
    with BlobStore(backend_settings.blob_root).open(final[0].sha256) as blob:
        with tarfile.open(fileobj=io.BytesIO(blob.read())) as tar:
            assert sorted(tar.getnames()) == ["manifest.json", "model.safetensors", "state.json"]


def events_data_is_json(owner_id: str, job_id: str) -> bool:
    with session_scope() as s:
        first = events.list_events(s, owner_id, job_id).items[1]
        return isinstance(first.data["path"], str)  # type: ignore[index]


def test_user_error_keeps_its_code_and_message(settings: Settings) -> None:
    owner_id, job_id = submit(settings)
    runner = FakeRunner(fail_with=DatasetError("labels must be 0..C-1", field="y"))
    assert execute_job(job_id, settings, runner) == "failed"
    job = load(job_id)
    assert job.error == {"code": "invalid_dataset", "message": "y: labels must be 0..C-1", "param": "y"}
    with session_scope() as s:
        last = events.list_events(s, owner_id, job_id, limit=100).items[-1]
        assert last.level == "error" and "labels must be 0..C-1" in last.message


def test_bad_stored_config_is_a_user_error(settings: Settings) -> None:
    _, job_id = submit(settings)
    with session_scope() as s:
        s.get(Job, job_id).config = {"method": "orca", "training": {"lr": -1}}  # type: ignore[union-attr]
    assert execute_job(job_id, settings, FakeRunner()) == "failed"
    error = load(job_id).error
    assert error is not None and error["code"] == "invalid_config" and error["param"] == "training.lr"


def test_internal_error_is_short_and_the_next_job_still_runs(settings: Settings) -> None:
    _, broken = submit(settings)
    _, healthy = submit(settings)
    assert execute_job(broken, settings, FakeRunner(fail_with=RuntimeError("CUDA error: " + "x" * 2000))) == "failed"
    error = load(broken).error
    assert error is not None and error["code"] == "internal_error"
    assert error["message"].startswith("RuntimeError: CUDA error") and len(error["message"]) <= 300
    assert execute_job(healthy, settings, FakeRunner()) == "succeeded"


def test_a_missing_blob_is_an_internal_error_not_the_users_dataset(settings: Settings) -> None:
    """Fails if the worker links a blob it has not checked: core then reports `invalid_dataset`."""
    _, job_id = submit(settings, data=b"bytes that go missing")
    with session_scope() as s:
        sha256 = files.blob_of(s, load(job_id).training_file_id)
    assert sha256 is not None
    BlobStore(settings.blob_root).path(sha256).unlink()
    runner = FakeRunner()
    assert execute_job(job_id, settings, runner) == "failed"
    error = load(job_id).error
    assert error is not None and error["code"] == "internal_error" and error["param"] is None
    assert "missing from the blob store" in error["message"] and runner.calls == []


def test_cancel_while_running_stops_and_keeps_the_checkpoint(settings: Settings) -> None:
    owner_id, job_id = submit(settings)

    def cancel_at(step: int) -> None:
        if step == 3:
            with session_scope() as s:
                jobs.request_cancel(s, owner_id, job_id)

    assert execute_job(job_id, settings, FakeRunner(on_step=cancel_at)) == "cancelled"
    job = load(job_id)
    assert job.status == "cancelled" and job.error is None and job.finished_at is not None
    with session_scope() as s:
        latest = checkpoints.latest(s, job_id)
    assert latest is not None and latest.step == 3 and job.result == {"checkpoint": latest.id, "step": 3}


def test_second_attempt_resumes_from_the_latest_checkpoint(settings: Settings) -> None:
    owner_id, job_id = submit(settings)
    with session_scope() as s:
        jobs.claim(s, job_id, "dead-worker", lease_seconds=-1)  # attempt 1 died, lease expired
    with session_scope() as s:  # what attempt 1 left behind
        directory = settings.data_dir / "attempt1"
        FakeRunner._save(directory, 4)
        tar_directory(directory, settings.data_dir / "a1.tar")
        ref = BlobStore(settings.blob_root).write_file(settings.data_dir / "a1.tar")
        checkpoints.create(s, job_id, step=4, epoch=0, stage="refine", sha256=ref.sha256, bytes=ref.size)
    runner = FakeRunner()
    assert execute_job(job_id, settings, runner) == "succeeded"
    assert runner.calls[0]["resume_step"] == 4
    job = load(job_id)
    assert job.attempt == 2
    with session_scope() as s:
        assert any("resuming from step 4" in e.message for e in events.list_events(s, owner_id, job_id).items)
        assert [p.step for p in metrics.list_metrics(s, owner_id, job_id, key="loss").items] == [5, 6]


def test_first_attempt_ignores_checkpoints(settings: Settings) -> None:
    _, job_id = submit(settings)
    runner = FakeRunner()
    execute_job(job_id, settings, runner)
    assert runner.calls[0]["resume_step"] is None


def test_lost_lease_stops_without_finishing(settings: Settings) -> None:
    _, job_id = submit(settings)
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "lease_seconds": 5.0})

    def stolen_at(step: int) -> None:
        if step == 2:
            with session_scope() as s:
                s.get(Job, job_id).lease_owner = "thief"  # type: ignore[union-attr]
            time.sleep(0.3)  # a heartbeat notices

    assert execute_job(job_id, fast, FakeRunner(on_step=stolen_at)) == "lease_lost"
    job = load(job_id)
    assert job.status == "running" and job.lease_owner == "thief"


def test_heartbeat_extends_the_lease(settings: Settings) -> None:
    _, job_id = submit(settings)
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "lease_seconds": 2.0})
    seen: list[float] = []

    def watch(step: int) -> None:
        job = load(job_id)
        seen.append((job.lease_expires_at - utcnow()).total_seconds())  # type: ignore[operator]
        time.sleep(0.2)

    execute_job(job_id, fast, FakeRunner(steps=3, on_step=watch))
    assert min(seen) > 1.5  # renewed while 0.6 s of "training" passed


def test_unclaimable_job_is_skipped(settings: Settings) -> None:
    owner_id, job_id = submit(settings)
    with session_scope() as s:
        jobs.request_cancel(s, owner_id, job_id)
    runner = FakeRunner()
    assert execute_job(job_id, settings, runner) == "skipped"
    assert runner.calls == []


def test_two_workers_racing_for_one_job_run_it_once(backend_settings: Settings) -> None:
    _, job_id = submit(backend_settings)
    runner = FakeRunner(step_seconds=0.01)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def work() -> None:
        barrier.wait()
        outcomes.append(execute_job(job_id, backend_settings, runner))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["skipped", "succeeded"] and len(runner.calls) == 1


def test_tar_roundtrip_and_unsafe_tar_refused(tmp_path: Path) -> None:
    source = FakeRunner._save(tmp_path / "ckpt", 7)
    (source / "sub").mkdir()
    (source / "sub" / "x.bin").write_bytes(b"x")
    tar_directory(source, tmp_path / "c.tar")
    out = extract_checkpoint(tmp_path / "c.tar", tmp_path / "out")
    assert (out / "sub" / "x.bin").read_bytes() == b"x" and (out / "state.json").is_file()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"!"))
    with pytest.raises(tarfile.TarError):
        extract_checkpoint(evil, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


def test_jsonable_turns_paths_and_numpy_into_json() -> None:
    import numpy as np

    assert jsonable({"p": Path("/a"), "n": np.float32(0.5), "k": [np.int64(3)]}) == {"p": "/a", "n": 0.5, "k": [3]}
