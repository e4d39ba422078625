"""`xmodal up` keeps its worker running: a worker that dies is started again (with a growing pause
while it keeps dying), never during shutdown, and jobs submitted afterwards still run."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.supervisor import WorkerSupervisor
from tests.service.api_fixtures import auth, free_port
from tests.service.test_e2e import QUICK, Service, alive, children, fresh_machine, sine_dataset, start_up, stop_up


def start_times(record: Path) -> list[float]:
    return [float(line) for line in record.read_text().split()] if record.exists() else []


def recorder(record: Path, runs_for: float = 0.0) -> list[str]:
    """A command that appends its start time to `record`, then lives `runs_for` seconds."""
    return [sys.executable, "-S", "-c", f"import time; open({str(record)!r}, 'a').write(f'{{time.time()}}\\n'); "
                                  f"time.sleep({runs_for})"]


def wait_for_starts(record: Path, count: int, timeout: float = 20.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while len(starts := start_times(record)) < count:
        assert time.monotonic() < deadline, f"only {len(starts)} of {count} starts"
        time.sleep(0.02)
    return starts


def gaps(starts: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(starts, starts[1:])]


def test_a_dying_process_is_restarted_with_a_doubling_capped_pause_and_not_after_stop(tmp_path: Path) -> None:
    record = tmp_path / "starts"
    supervisor = WorkerSupervisor(recorder(record), first_backoff=0.2, max_backoff=0.4, stable_after=60)
    supervisor.start()
    try:
        starts = wait_for_starts(record, 4)
    finally:
        asked = time.monotonic()
        supervisor.stop()
        stop_seconds = time.monotonic() - asked
    pauses = gaps(starts)
    assert pauses[0] >= 0.2 and pauses[1] >= 0.4 and pauses[2] >= 0.4, pauses
    assert pauses[2] < 0.7, pauses  # capped at 0.4 s, where doubling would wait 0.8 s
    assert stop_seconds < 1.0  # a stop during the pause does not wait it out
    stopped_with = len(start_times(record))
    time.sleep(0.6)
    assert len(start_times(record)) == stopped_with  # nothing restarted once stopping


def test_a_process_that_ran_a_while_is_restarted_after_the_first_pause_again(tmp_path: Path) -> None:
    record = tmp_path / "starts"
    supervisor = WorkerSupervisor(recorder(record, runs_for=0.4), first_backoff=0.3, max_backoff=10, stable_after=0.3)
    supervisor.start()
    try:
        between = gaps(wait_for_starts(record, 4))
    finally:
        supervisor.stop()
    # every run outlived stable_after, so every pause is the first one (0.3 s); doubling would add 0.3 s, then 0.9 s
    assert min(between) >= 0.7 and max(between) - min(between) < 0.3, between


def worker_pids(up_pid: int) -> list[int]:
    """`up`'s children that are `xmodal worker` processes."""
    def is_worker(pid: int) -> bool:
        try:
            return b"cli.main\0worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False

    return [pid for pid in children(up_pid) if is_worker(pid)]


def wait_for_text(log: Path, text: str, service: Service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never appeared\n{service.tail()}"
        time.sleep(0.1)


@pytest.mark.integration
def test_up_restarts_a_killed_worker_and_the_next_job_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    fresh_machine(monkeypatch, tmp_path / "var")
    monkeypatch.setenv("XMODAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xmodal-cache"))
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as stderr:
        process, banner = start_up(port, stderr=stderr)
    key = banner.split("API key: ", 1)[1].split()[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth(key), timeout=30) as http:
            service = Service(http, tmp_path)
            (first,) = worker_pids(process.pid)
            wait_for_text(log, " ready.", service)
            os.killpg(first, signal.SIGKILL)  # the worker and its pool, as the OOM killer or a stray kill would
            killed = time.monotonic()
            while not (restarted := [pid for pid in worker_pids(process.pid) if pid != first and alive(pid)]):
                assert time.monotonic() - killed < 30, f"no new worker\n{service.tail()}"
                time.sleep(0.05)
            restart_seconds = time.monotonic() - killed
            job = service.finished(service.create(service.upload(sine_dataset()[0]), QUICK)["id"])
            assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    finally:
        stop_up(process)
    assert restart_seconds < 5.0  # the first pause is 1 s
    assert not alive(first) and not alive(restarted[0])  # Ctrl-C stopped the restarted worker too
    assert f"the worker (pid {first}) exited with -9" in log.read_text()
