"""`xmodal worker` as a real process: a message sent with store.queue reaches it, the job row
reaches a terminal state, and a job process killed mid-run is recovered and resumed.

Runs on SQLite + filesystem:// and on PostgreSQL + Redis. The success path is `xmodal worker`
with the real core.run on a tiny job. A job process SIGKILLed mid-training resumes from its latest
checkpoint and ends with the same test metrics as an uninterrupted run. The recovery-rule tests
(re-queue, out of attempts) run test_worker's fake runner, slow enough to kill between
checkpoints (patched in by LAUNCHER, a test-only path; production code has no runner switch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store.blobs import BlobStore
from store.db import session_scope
from store.models import Checkpoint, Job
from store.queue import send_run_job
from store.repositories import checkpoints, events, metrics
from store.settings import Settings
from tests.core.helpers import assert_same_weights
from tests.service.test_e2e import children, sine_dataset
from tests.service.test_worker import submit
from tests.service.test_worker_real_run import TINY_CONFIG, set_config, tiny_dataset
from worker.checkpoint_tar import extract_checkpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = """
import argparse, sys
import worker.lifecycle
from tests.service.test_worker import FakeRunner
worker.lifecycle.default_runner = lambda: FakeRunner(step_seconds=float(sys.argv[1]))
from worker import commands
parser = argparse.ArgumentParser()
commands.register(parser.add_subparsers(dest="command"))
args = parser.parse_args(["worker", "--concurrency", "1", "--loglevel", "info"])
sys.exit(args.func(args))
"""


@pytest.fixture(params=["sqlite+filesystem", "postgresql+redis"])
def deployment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for both sides; short leases so that recovery happens within the test."""
    if request.param == "sqlite+filesystem":
        base: Settings = request.getfixturevalue("settings")
    else:
        base = request.getfixturevalue("pg_settings")
        monkeypatch.setenv("XMODAL_BROKER_URL", request.getfixturevalue("redis_url"))
    monkeypatch.setenv("XMODAL_LEASE_SECONDS", "3")
    monkeypatch.setenv("XMODAL_HEARTBEAT_SECONDS", "0.5")
    from store.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    assert settings.database_url == base.database_url
    return settings


def start_worker(log: Path, fake_step_seconds: float | None = None) -> subprocess.Popen[bytes]:
    """`xmodal worker` with the real runner, or (given fake_step_seconds) with the fake one."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ([sys.executable, "-m", "cli.main", "worker", "--concurrency", "1"] if fake_step_seconds is None
            else [sys.executable, "-c", LAUNCHER, str(fake_step_seconds)])
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def worker_log(tmp_path: Path) -> Path:
    return tmp_path / "worker.log"


@pytest.fixture
def run_worker(worker_log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started workers are stopped (warm shutdown, then SIGKILL of their own group) afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(predicate: object, timeout: float, log: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def job(job_id: str) -> Job:
    with session_scope() as s:
        row = s.get(Job, job_id)
        assert row is not None
        return row


def test_worker_process_runs_a_real_job_to_the_end(deployment: Settings, run_worker: list, worker_log: Path) -> None:
    run_worker.append(start_worker(worker_log))
    owner_id, job_id = submit(deployment, data=tiny_dataset())
    with session_scope() as s:
        s.get(Job, job_id).config = TINY_CONFIG  # type: ignore[union-attr]
    send_run_job(job_id, deployment)
    send_run_job(job_id, deployment)  # a duplicate wake-up must not run the job twice
    wait_for(lambda: job(job_id).status in ("succeeded", "failed"), 240, worker_log, "the job to finish")
    finished = job(job_id)
    assert finished.status == "succeeded", finished.error
    assert finished.attempt == 1 and finished.result is not None
    with session_scope() as s:
        assert checkpoints.get(s, owner_id, job_id, finished.result["checkpoint"]) is not None
    assert run_worker[0].poll() is None  # the worker is still there for the next job


def wait_for_checkpoint(job_id: str, log: Path, stage: str | None = None) -> None:
    """Wait until the job has a checkpoint row (its latest one of `stage`, if given)."""

    def stored() -> bool:
        with session_scope() as s:
            latest = checkpoints.latest(s, job_id)
            return latest is not None and stage in (None, latest.stage)

    wait_for(stored, 120, log, f"a {stage} checkpoint" if stage else "a checkpoint")


def kill_job_process(job_id: str, worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's child process that holds the job's lease; the worker itself lives on."""
    lease_owner = job(job_id).lease_owner
    assert lease_owner is not None
    pid = int(lease_owner.split(":")[1])
    assert pid in children(worker.pid)
    os.kill(pid, signal.SIGKILL)


def messages(owner_id: str, job_id: str) -> list[str]:
    with session_scope() as s:
        return [e.message for e in events.list_events(s, owner_id, job_id, limit=500).items]


def test_killed_job_process_is_requeued_and_resumes(deployment: Settings, run_worker: list, worker_log: Path) -> None:
    run_worker.append(start_worker(worker_log, fake_step_seconds=0.4))
    owner_id, job_id = submit(deployment)
    send_run_job(job_id, deployment)
    wait_for_checkpoint(job_id, worker_log)
    kill_job_process(job_id, run_worker[0])
    wait_for(lambda: job(job_id).status == "succeeded", 90, worker_log, "the job to be recovered and finish")
    assert job(job_id).attempt == 2
    logged = messages(owner_id, job_id)
    assert any("re-queued" in m for m in logged)
    assert any(m.startswith("attempt 2 started") and "resuming from step" in m for m in logged)


def test_killed_job_process_with_no_attempts_left_fails(deployment: Settings, run_worker: list,
                                                        worker_log: Path) -> None:
    run_worker.append(start_worker(worker_log, fake_step_seconds=0.4))
    _, job_id = submit(deployment, max_attempts=1)
    send_run_job(job_id, deployment)
    wait_for_checkpoint(job_id, worker_log)
    kill_job_process(job_id, run_worker[0])
    wait_for(lambda: job(job_id).status != "running", 60, worker_log, "the lost job to be given up")
    failed = job(job_id)
    assert failed.status == "failed" and failed.attempt == 1 and failed.finished_at is not None
    assert failed.error is not None and failed.error["code"] in ("max_attempts",), failed.error


RESUMABLE = {**TINY_CONFIG, "training": {"epochs": 4, "batch_size": 8}, "checkpoint": {"every_steps": 5}}
METRIC_RTOL = 1e-6
"""Resume is bit-exact on CPU (the weights are compared bit for bit too); the metrics' tolerance is nominal."""


@dataclass(frozen=True)
class Reference:
    """RESUMABLE run straight through: its test metrics, final (best) weights and last trained weights."""

    test_metrics: dict[str, float]
    final: Path
    last_trained: Path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    import core
    from core.config import parse_config

    root = tmp_path_factory.mktemp("uninterrupted")
    train = root / "train.npz"
    train.write_bytes(sine_dataset()[0])
    result = core.run(parse_config(RESUMABLE), train, root / "run")
    last_trained = sorted((root / "run" / "checkpoints").iterdir())[-1]  # names start with the padded step
    return Reference(result.summary["test"], result.checkpoint_dir, last_trained)


def stored_checkpoint(settings: Settings, checkpoint: Checkpoint, dest: Path) -> Path:
    return extract_checkpoint(BlobStore(settings.blob_root).path(checkpoint.sha256), dest)


def assert_core_resumed_from(owner_id: str, job_id: str, step: int) -> None:
    """Core's own evidence that it restored `step`; the worker's "resuming from step" message is written from
    the database before core runs, so it cannot tell a resume from a restart at step 0 (which, re-seeded
    from the config, would end on the same weights). Core's resumed event must name the step, and what core
    reported after it (attempt 2) must lie at or past that step: no alignment metric at step 0, and train
    losses only for steps after it."""
    with session_scope() as s:
        logged = events.list_events(s, owner_id, job_id, limit=500)
        points = metrics.list_metrics(s, owner_id, job_id, limit=1000)
    assert not logged.has_more and not points.has_more
    (event,) = [e for e in logged.items if e.data and "resumed_from_step" in e.data]
    assert event.data["resumed_from_step"] == step, event.message
    after = [p for p in points.items if p.created_at >= event.created_at]
    assert any(p.split == "train" for p in after), "attempt 2 reported no train metric"
    assert min(p.step for p in after) >= step
    assert min(p.step for p in after if p.split == "train") > step


@pytest.mark.slow
@pytest.mark.parametrize("deployment", ["sqlite+filesystem"], indirect=True)  # PostgreSQL + Redis: the tests above
def test_real_job_killed_mid_training_resumes_to_the_uninterrupted_result(
        deployment: Settings, run_worker: list, worker_log: Path, uninterrupted: Reference, tmp_path: Path) -> None:
    run_worker.append(start_worker(worker_log))
    owner_id, job_id = submit(deployment, data=sine_dataset()[0])
    set_config(job_id, RESUMABLE)
    send_run_job(job_id, deployment)
    wait_for_checkpoint(job_id, worker_log, stage="refine")
    kill_job_process(job_id, run_worker[0])
    wait_for(lambda: job(job_id).status in ("succeeded", "failed"), 180, worker_log, "the job to resume and finish")

    finished = job(job_id)
    assert finished.status == "succeeded" and finished.attempt == 2, finished.error
    assert finished.result is not None
    (resumed,) = [m for m in messages(owner_id, job_id) if m.startswith("attempt 2 started")]
    from_step = int(resumed.rsplit("resuming from step ", 1)[1])
    assert 0 < from_step < finished.result["step"]
    assert_core_resumed_from(owner_id, job_id, from_step)
    assert finished.result["summary"]["test"] == pytest.approx(uninterrupted.test_metrics, rel=METRIC_RTOL)
    with session_scope() as s:
        stored = checkpoints.list_checkpoints(s, owner_id, job_id)
    (final,) = [c for c in stored if c.final]
    last_trained = max((c for c in stored if c.stage == "refine"), key=lambda c: (c.step, c.created_at))
    assert_same_weights(uninterrupted.final, stored_checkpoint(deployment, final, tmp_path / "final"))
    assert_same_weights(uninterrupted.last_trained, stored_checkpoint(deployment, last_trained, tmp_path / "last"))
