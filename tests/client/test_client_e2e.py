"""The client and the CLI against a real `xmodal up` (API + worker, SQLite + filesystem broker):
upload → create → wait → download a verified checkpoint, once through `Client`, once through
`xmodal … --json` subprocesses (including a download resumed with Range)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from client import Client
from tests.service.api_fixtures import free_port
from tests.service.test_e2e import JOB_SECONDS, XMODAL, fresh_machine, start_up, stop_up
from tests.service.test_worker_real_run import TINY_CONFIG, tiny_dataset

pytestmark = pytest.mark.integration

CHECKPOINT_FILES = {"model.safetensors", "manifest.json"}
TINY = cast(dict[str, Any], TINY_CONFIG)  # a job file's sections: tiny-bert, one epoch of each stage


class Up:
    """A running `xmodal up`: its URL, first API key and log."""

    def __init__(self, url: str, key: str, log: Path) -> None:
        self.url, self.key, self.log = url, key, log

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    base = tmp_path_factory.mktemp("up")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fresh_machine(monkeypatch, base / "var")
        # proxy feature banks are computed once per test session (shared with tests/service/test_e2e.py)
        monkeypatch.setenv("XMODAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "xmodal-cache"))
        port = free_port()
        log = base / "up.log"
        with log.open("wb") as stderr:
            process, banner = start_up(port, stderr)
            try:
                yield Up(f"http://127.0.0.1:{port}", banner.split("API key: ", 1)[1].split()[0], log)
            finally:
                stop_up(process)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "train.npz"
    path.write_bytes(tiny_dataset())
    return path


def tar_members(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return set(tar.getnames())


def test_the_client_runs_a_job_from_upload_to_a_verified_checkpoint(up: Up, dataset: Path, tmp_path: Path) -> None:
    sections = {key: value for key, value in TINY.items() if key not in ("method", "body")}
    with Client(up.url, up.key) as xm:
        file = xm.files.upload(dataset, idempotency_key="upload-once")
        assert file.status == "processed" and file.bytes == dataset.stat().st_size and file.info
        assert xm.files.upload(dataset, idempotency_key="upload-once").id == file.id  # the server honours the key
        job = xm.jobs.create(file.id, TINY["body"]["name"], {"type": "orca", "orca": sections}, seed=0)
        assert job.status == "queued" and job.seed == 0

        polled: list[str] = []
        job = xm.jobs.wait(job.id, poll_interval=0.5, timeout=JOB_SECONDS, on_update=lambda j: polled.append(j.status))
        assert job.status == "succeeded", f"{job}\n{up.tail()}"
        assert polled[-1] == "succeeded" and job.progress is not None and job.progress.fraction == 1.0
        assert len(list(xm.jobs.iter_events(job.id))) >= 3
        assert [m.key for m in xm.jobs.iter_metrics(job.id, key="loss", split="train")]
        final = next(c for c in xm.jobs.checkpoints(job.id) if c.final)

        result = xm.jobs.download(job.id, dest=tmp_path)
    assert result.path == tmp_path / f"{final.id}.tar" and job.result and job.result["checkpoint"] == final.id
    assert (result.sha256, result.bytes) == (final.sha256, final.bytes)
    assert tar_members(result.path) >= CHECKPOINT_FILES


def xmodal(up: Up, *args: str) -> Any:
    """`xmodal ARGS --json` as a user runs it (key from the environment); its parsed stdout."""
    env = {**os.environ, "XMODAL_API_KEY": up.key}
    done = subprocess.run([*XMODAL, *args, "--base-url", up.url, "--json"], env=env, capture_output=True, text=True,
                          timeout=JOB_SECONDS)
    assert done.returncode == 0, f"xmodal {' '.join(args)}: {done.returncode}\n{done.stderr}\n{up.tail()}"
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def test_the_cli_runs_a_job_and_resumes_a_download(up: Up, dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(TINY))  # a job file as `xmodal train` takes it
    file = xmodal(up, "files", "upload", str(dataset))
    assert file["status"] == "processed"
    assert file["id"] in [f["id"] for f in xmodal(up, "files", "list")["data"]]
    job = xmodal(up, "jobs", "create", "--training-file", file["id"], "--config", str(config), "--seed", "0")
    assert job["model"] == TINY["body"]["name"] and job["method"]["type"] == TINY["method"]
    assert job["method"]["orca"]["alignment"]["maxsamples"] == TINY["alignment"]["maxsamples"]

    job = xmodal(up, "jobs", "watch", job["id"], "--interval", "0.5")
    assert job["status"] == "succeeded"
    assert xmodal(up, "jobs", "get", job["id"])["finished_at"] == job["finished_at"]

    whole = xmodal(up, "jobs", "download", job["id"], "-o", str(tmp_path / "whole.tar"))
    assert whole["resumed_from"] == 0 and tar_members(tmp_path / "whole.tar") >= CHECKPOINT_FILES
    half = whole["bytes"] // 2
    (tmp_path / "resumed.tar.part").write_bytes((tmp_path / "whole.tar").read_bytes()[:half])
    resumed = xmodal(up, "jobs", "download", job["id"], "-o", str(tmp_path / "resumed.tar"))
    assert resumed["resumed_from"] == half and resumed["sha256"] == whole["sha256"]
    assert (tmp_path / "resumed.tar").read_bytes() == (tmp_path / "whole.tar").read_bytes()
