"""End to end over real processes: `xmodal serve` + `xmodal worker` (+ `xmodal up`), on SQLite +
filesystem broker and on PostgreSQL + Redis. Upload → job → events, metrics, checkpoints →
download → `core.load_checkpoint(dir).predict(x)` reproduces the job's own test metric."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest

from store.settings import Settings, get_settings, reset_settings
from tests.service.api_fixtures import REPO_ROOT, auth, free_port, running, wait_until_up
from tests.service.conftest import make_owner_key

pytestmark = pytest.mark.integration

JOB_SECONDS = 300.0
XMODAL = [sys.executable, "-m", "cli.main"]


def orca(training: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"type": "orca", "orca": {"alignment": {"epochs": 1, "maxsamples": 16, "proxy": "digits"},
                                     "training": training, **sections}}


QUICK = orca({"epochs": 1, "batch_size": 8})


def sine_dataset(n: int = 64, n_test: int = 24, length: int = 32,
                 seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Two classes told apart by a sine's phase; returns the .npz bytes and the test split."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n + n_test)
    t = np.linspace(0, 4 * np.pi, length)
    x = (np.sin(t[None, :] + np.pi * y[:, None]) + 0.3 * rng.standard_normal((n + n_test, length)))[:, None, :]
    x = x.astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    return buffer.getvalue(), x[n:], y[n:]


@dataclass
class Service:
    http: httpx.Client
    logs: Path

    def upload(self, content: bytes) -> str:
        response = self.http.post("/v1/files", files={"file": ("train.npz", content)}, data={"purpose": "fine-tune"})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def create(self, file_id: str, method: dict[str, Any], model: str = "tiny-bert") -> dict[str, Any]:
        response = self.http.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id,
                                                                "method": method, "seed": 0})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json())

    def wait(self, job_id: str, until: Any, timeout: float = JOB_SECONDS, what: str = "the job") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}: {self.job(job_id)}\n{self.tail()}")

    def finished(self, job_id: str) -> dict[str, Any]:
        return self.wait(job_id, lambda job: job["status"] in ("succeeded", "failed", "cancelled"))

    def everything(self, path: str) -> list[dict[str, Any]]:
        """Follow a cursor-paged list to its end, a small page at a time."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 7}
        while True:
            page = self.http.get(path, params=params).json()
            items += page["data"]
            if not page["has_more"]:
                return items
            params["after"] = page["last_id"]

    def tail(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(self.logs.glob("*.log")))


@pytest.fixture(params=["sqlite+filesystem", "postgresql+redis"])
def deployment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if request.param == "sqlite+filesystem":
        request.getfixturevalue("settings")
    else:
        request.getfixturevalue("pg_settings")
        monkeypatch.setenv("XMODAL_BROKER_URL", request.getfixturevalue("redis_url"))
    # proxy feature banks are computed once per test session, not in the user's home
    monkeypatch.setenv("XMODAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xmodal-cache"))
    # allowed, so the API queues it, but on no hub: the worker's load fails (a user error)
    monkeypatch.setenv("XMODAL_ALLOWED_HUB_MODELS", "no-such-model-anywhere")
    reset_settings()
    return get_settings()


@pytest.fixture
def service(deployment: Settings, tmp_path: Path) -> Iterator[Service]:
    """`xmodal serve` and `xmodal worker` as real processes, and an HTTP client with a key."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = make_owner_key("alice").key
    with running([*XMODAL, "serve", "--port", str(port)], tmp_path / "server.log") as server, \
            running([*XMODAL, "worker"], tmp_path / "worker.log"), \
            httpx.Client(base_url=url, headers=auth(key), timeout=30) as http:
        service = Service(http, tmp_path)
        try:
            wait_until_up(url, server)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}\n{service.tail()}") from None
        yield service


def untar(content: bytes, dest: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def test_job_runs_end_to_end(service: Service, tmp_path: Path) -> None:
    import core

    content, x_test, y_test = sine_dataset()
    job = service.create(service.upload(content), QUICK)
    assert job["status"] == "queued"
    job = service.finished(job["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    assert job["error"] is None and job["attempt"] == 1 and job["finished_at"] >= job["started_at"]
    assert job["progress"]["fraction"] == 1.0

    base = f"/v1/fine_tuning/jobs/{job['id']}"
    events = service.everything(f"{base}/events")
    assert len(events) >= 3 and [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert all(e["object"] == "fine_tuning.job.event" for e in events)
    metrics = service.everything(f"{base}/metrics")
    assert [m["id"] for m in metrics] == sorted({m["id"] for m in metrics})
    train_steps = [m["step"] for m in metrics if m["split"] == "train"]
    assert train_steps and train_steps == sorted(train_steps)
    assert {m["split"] for m in metrics} >= {"align", "train", "final_test"}

    checkpoints = service.http.get(f"{base}/checkpoints").json()["data"]
    final = next(c for c in checkpoints if c["id"] == job["result"]["checkpoint"])
    assert final["final"] is True
    download = service.http.get(f"{base}/checkpoints/{final['id']}/content")
    assert download.status_code == 200
    digest = hashlib.sha256(download.content).hexdigest()
    assert download.headers["etag"] == f'"{digest}"' and digest == final["sha256"]
    assert len(download.content) == final["bytes"]

    predictions = core.load_checkpoint(untar(download.content, tmp_path / "checkpoint")).predict(x_test)
    assert predictions.shape == (len(x_test),)
    test_error = float(np.mean(predictions != y_test))
    assert test_error == pytest.approx(job["result"]["summary"]["test"]["error"])
    reported = [m["value"] for m in metrics if m["split"] == "final_test" and m["key"] == "error"]
    assert reported == [pytest.approx(test_error)]

    # beside the model's metrics, its classical baseline on the same splits: in the result, the event
    # log and the final checkpoint's summary (the summary.json a `xmodal train` run writes)
    baseline = job["result"]["baseline"]
    assert {"method", "params", "validation", "test", "seconds"} <= set(baseline) and "baseline" not in job["result"]["summary"]
    assert set(baseline["test"]) == set(job["result"]["summary"]["test"]) and set(baseline["validation"]) == {"error", "f1_error"}
    assert [e["data"]["baseline"] for e in events if "baseline" in (e["data"] or {})] == [baseline]
    manifest = json.loads((tmp_path / "checkpoint" / "manifest.json").read_text())
    assert manifest["summary"]["baseline"] == baseline


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(service: Service) -> None:
    content, _, _ = sine_dataset()
    long_job = orca({"epochs": 2000, "batch_size": 8}, checkpoint={"every_epochs": 1})
    job = service.create(service.upload(content), long_job)
    running_job = service.wait(job["id"], lambda j: j["status"] == "running" and (j["progress"] or {}).get(
        "stage") == "refine" and j["progress"]["step"] >= 3, what="training to be under way")
    total = running_job["progress"]["total_steps"]
    cancelled = service.http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()
    assert cancelled["cancel_requested"] is True and cancelled["status"] in ("running", "cancelled")
    asked = time.monotonic()
    job = service.wait(job["id"], lambda j: j["status"] != "running", timeout=60, what="the cancel to land")
    assert job["status"] == "cancelled" and time.monotonic() - asked < 60
    assert job["result"]["step"] < total
    checkpoints = service.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    kept = next(c for c in checkpoints if c["id"] == job["result"]["checkpoint"])
    assert kept["step"] == job["result"]["step"]
    download = service.http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints/{kept['id']}/content")
    assert hashlib.sha256(download.content).hexdigest() == kept["sha256"]


def test_bad_jobs_fail_with_a_user_error_and_the_worker_goes_on(service: Service) -> None:
    content, _, _ = sine_dataset()
    file_id = service.upload(content)
    wrong_task = service.create(file_id, {"type": "orca", "orca": {**QUICK["orca"], "task": "dense_regression"}})
    unknown_model = service.create(file_id, QUICK, model="no-such-model-anywhere")
    good = service.create(file_id, QUICK)

    failed = service.finished(wrong_task["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_dataset", failed
    assert failed["error"]["param"] == "y" and "dense_regression" in failed["error"]["message"]
    failed = service.finished(unknown_model["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_config", failed
    assert "no-such-model-anywhere" in failed["error"]["message"]
    assert service.finished(good["id"])["status"] == "succeeded", service.tail()


def children(pid: int) -> list[int]:
    """Child pids of `pid`, whichever of its threads started them."""
    return [int(child) for path in Path(f"/proc/{pid}/task").glob("*/children") for child in path.read_text().split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def fresh_machine(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    """No XMODAL_* settings but the data dir: `xmodal up` as a new user runs it."""
    for name in [name for name in os.environ if name.startswith("XMODAL_") and not name.startswith("XMODAL_TEST")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XMODAL_DATA_DIR", str(data_dir))


def start_up(port: int, stderr: int | IO[bytes] = subprocess.DEVNULL) -> tuple[subprocess.Popen[str], str]:
    """`xmodal up` on `port`; returns the process and its two-line banner once the API answers."""
    process = subprocess.Popen([*XMODAL, "up", "--port", str(port)], cwd=REPO_ROOT, env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(2)]
    wait_until_up(f"http://127.0.0.1:{port}", process)
    return process, "".join(lines)


def stop_up(process: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT) -> None:
    process.send_signal(sig)
    process.wait(60)


def test_up_runs_api_and_worker_and_reprints_the_first_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh_machine(monkeypatch, tmp_path / "var")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    process, banner = start_up(port)
    try:
        assert url in banner
        key = banner.split("API key: ", 1)[1].split()[0]
        assert httpx.get(f"{url}/v1/files", headers=auth(key)).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        (worker_pid,) = children(process.pid)
        assert alive(worker_pid)
    finally:
        stop_up(process)
    assert process.returncode == 0 and not alive(worker_pid)
    assert (tmp_path / "var" / "xmodal.db").is_file() and (tmp_path / "var" / "first-key.txt").is_file()

    process, banner = start_up(port)
    (worker_pid,) = children(process.pid)
    stop_up(process, signal.SIGTERM)  # docker stop / systemd: the worker must not be left behind either
    assert process.returncode == 128 + signal.SIGTERM and not alive(worker_pid)
    assert f"API key: {key}" in banner  # a restart shows the same key; no second one was made
