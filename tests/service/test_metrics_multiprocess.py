"""`xmodal serve --workers 2`: /metrics from whichever process answers shows one set of request
counters, summed over both processes (prometheus_client's multiprocess mode), and the database
gauges once, not once per process; a restart starts the counts from zero. `--workers 1` (uvicorn in
the `serve` process itself) counts the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from store.settings import Settings
from tests.service.api_fixtures import auth, free_port, running, wait_until_up
from tests.service.conftest import OwnerKey

JOB_ROUTE = "/v1/fine_tuning/jobs/{job_id}"
REQUESTS = 24
SCRAPES = 8


@contextmanager
def serve_workers(log_path: Path, workers: int = 2) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", str(workers)],
                 log_path) as process:
        wait_until_up(url, process)
        yield url


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape on a new connection (so either process may answer): (sample name, labels) → value."""
    response = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def job_gets(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return samples.get(("xmodal_http_requests_total",
                        frozenset({"method": "GET", "route": JOB_ROUTE, "status": "404"}.items())), 0.0)


def send_job_gets(url: str, key: str, n: int) -> None:
    for i in range(n):  # a new connection each, so both processes answer some
        response = httpx.get(f"{url}/v1/fine_tuning/jobs/ftjob-{i}", headers={**auth(key), "Connection": "close"})
        assert response.status_code == 404


@pytest.fixture
def no_operator_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.mark.parametrize("workers", [2, 1])
def test_every_scrape_sums_the_processes_and_counts_the_database_once(
        settings: Settings, owner_key: OwnerKey, no_operator_dir: None, tmp_path: Path, workers: int) -> None:
    with serve_workers(tmp_path / "serve.log", workers) as url:
        send_job_gets(url, owner_key.key, REQUESTS)
        scrapes = [scrape(url) for _ in range(SCRAPES)]
    assert [job_gets(samples) for samples in scrapes] == [REQUESTS] * SCRAPES
    for samples in scrapes:
        assert samples[("xmodal_database_up", frozenset())] == 1
        assert samples[("xmodal_jobs", frozenset({("status", "queued")}))] == 0
    assert samples[("xmodal_sse_streams_open", frozenset())] == 0


def test_a_restart_on_the_operators_directory_starts_from_zero(
        settings: Settings, owner_key: OwnerKey, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    with serve_workers(tmp_path / "first.log") as url:
        send_job_gets(url, owner_key.key, REQUESTS)
        assert job_gets(scrape(url)) == REQUESTS
    assert list(directory.glob("*.db"))  # the operator's directory is kept, with the first server's files
    with serve_workers(tmp_path / "second.log") as url:
        send_job_gets(url, owner_key.key, 3)
        assert [job_gets(scrape(url)) for _ in range(3)] == [3, 3, 3]


def test_a_dead_processes_open_streams_leave_the_sum_and_its_counters_stay(tmp_path: Path) -> None:
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from api.routes.metrics import forget_dead_processes

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead, alive = int(gone.stdout), os.getpid()
    for kind, pid in (("gauge_livesum", dead), ("gauge_livesum", alive), ("counter", dead)):
        files = MmapedDict(str(tmp_path / f"{kind}_{pid}.db"))
        files.write_value(mmap_key("xmodal_sse_streams_open", "xmodal_sse_streams_open", [], [], ""), 2.0, 0.0)
        files.close()
    forget_dead_processes(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"counter_{dead}.db", f"gauge_livesum_{alive}.db"]
