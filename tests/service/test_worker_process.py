"""`xmodal worker` as a real process: a message sent with store.queue reaches it, the job row
reaches a terminal state, and a job process killed mid-run is recovered and resumed.

Runs on SQLite + filesystem:// and on PostgreSQL + Redis. The success path is `xmodal worker`
with the real core.run on a tiny job. The kill test needs a job slow enough to kill between
checkpoints, so its worker runs test_worker's fake runner (patched in by LAUNCHER, a test-only
path; production code has no runner switch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.db import session_scope
from store.models import Job
from store.queue import send_run_job
from store.repositories import checkpoints, events
from store.settings import Settings
from tests.service.test_worker import submit
from tests.service.test_worker_real_run import TINY_CONFIG, tiny_dataset

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


def test_killed_job_process_is_requeued_and_resumes(deployment: Settings, run_worker: list, worker_log: Path) -> None:
    run_worker.append(start_worker(worker_log, fake_step_seconds=0.4))
    owner_id, job_id = submit(deployment)
    send_run_job(job_id, deployment)

    def has_checkpoint() -> bool:
        with session_scope() as s:
            return checkpoints.latest(s, job_id) is not None

    wait_for(has_checkpoint, 60, worker_log, "a first checkpoint")
    lease_owner = job(job_id).lease_owner
    assert lease_owner is not None
    os.kill(int(lease_owner.split(":")[1]), signal.SIGKILL)  # the job's own child process
    wait_for(lambda: job(job_id).status == "succeeded", 90, worker_log, "the job to be recovered and finish")
    assert job(job_id).attempt == 2
    with session_scope() as s:
        messages = [e.message for e in events.list_events(s, owner_id, job_id, limit=200).items]
    assert any("re-queued" in m for m in messages)
    assert any(m.startswith("attempt 2 started") and "resuming from step" in m for m in messages)
