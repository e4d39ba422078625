"""`/metrics` (Prometheus text: request counters by route template, fleet gauges read from the
database), the worker's steps/s, and JSON log lines carrying the job id, from the API, the worker
and a real `xmodal serve`."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

import worker.reports as reports_module
import worker.lifecycle as lifecycle
from core.callbacks import Progress
from store.db import session_scope
from store.logs import JsonFormatter, job_context
from store.models import Job
from store.repositories import jobs
from store.settings import Settings
from tests.service.api_fixtures import (
    auth,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
    free_port,
    live_server,
    running,
    wait_until_up,
)
from tests.service.conftest import OwnerKey
from tests.service.test_api_requests import create_job, file_id, job_body  # noqa: F401 (`file_id` fixture)

JOB_ROUTE = "/v1/fine_tuning/jobs/{job_id}"


def scrape(client: TestClient | httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`/metrics` parsed: (sample name, labels) → value."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_request_counters_and_latency_move_by_route_template(client: TestClient, owner_key: OwnerKey) -> None:
    before = scrape(client)
    for job_id in ("ftjob-one", "ftjob-two"):  # two raw paths, one route template
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(owner_key.key)).status_code == 404
    client.get("/healthz")
    client.get("/no/such/route")
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("xmodal_http_requests_total", method="GET", route=JOB_ROUTE, status="404") == 2
    assert moved("xmodal_http_request_duration_seconds_count", method="GET", route=JOB_ROUTE) == 2
    assert moved("xmodal_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert moved("xmodal_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("ftjob-one" in str(labels) for _, labels in after)  # raw paths never become labels


def test_fleet_gauges_match_the_database(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    ids = [create_job(client, owner_key.key, **job_body(file_id)).json()["id"] for _ in range(4)]
    client.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel", headers=auth(owner_key.key))
    with session_scope() as session:
        for job_id, worker in ((ids[1], "w1"), (ids[2], "w2")):
            assert jobs.claim(session, job_id, worker, 60) is not None
        jobs.set_progress(session, ids[1], "w1", {"stage": "refine", "step": 3, "total_steps": 9, "fraction": 1 / 3,
                                                  "eta_seconds": 2.0, "steps_per_second": 2.5})
        jobs.set_progress(session, ids[2], "w2", {"stage": "refine", "step": 1, "total_steps": 9, "fraction": 1 / 9,
                                                  "eta_seconds": 8.0, "steps_per_second": 1.5})
        expected = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    samples = scrape(client)
    assert expected == {"queued": 1, "running": 2, "cancelled": 1}
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert value(samples, "xmodal_jobs", status=status) == expected.get(status, 0)
    assert value(samples, "xmodal_queue_depth") == 1 and value(samples, "xmodal_database_up") == 1
    assert value(samples, "xmodal_live_leases") == 2
    assert value(samples, "xmodal_training_steps_per_second") == 4.0
    assert 0 <= value(samples, "xmodal_oldest_heartbeat_age_seconds") < 30


def test_metrics_needs_no_key_and_is_not_in_the_api_schema(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_the_worker_reports_steps_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    callback = reports_module.ProgressWriter("ftjob-x", "w", 1.0)
    written: list[dict[str, Any]] = []
    monkeypatch.setattr(callback, "_write", lambda work: work(None))
    monkeypatch.setattr(reports_module.jobs, "set_progress", lambda _s, _j, _w, record: written.append(record))
    clock = iter([10.0, 11.0, 13.0, 14.0])
    monkeypatch.setattr(reports_module.time, "monotonic", lambda: next(clock))
    callback._last_progress = 0.0
    for stage, step in (("refine", 5), ("refine", 9), ("refine", 12), ("evaluate", 1)):
        callback.on_progress(Progress(stage, step, 100, None))  # type: ignore[arg-type]
    # the first write has nothing to measure from; then steps over seconds since the previous write;
    # a new stage counts its steps afresh
    assert [record["steps_per_second"] for record in written] == [None, 4.0, 1.5, None]


# --- JSON logs ----------------------------------------------------------------------------------


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger also writes JSON lines into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def test_a_record_is_one_json_object_with_the_job_id(json_log: io.StringIO) -> None:
    log = logging.getLogger("xmodal.test")
    with job_context("ftjob-abc"):
        log.warning("step %d of %d", 3, 9)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
    log.warning("outside")
    inside, broken, outside = json_lines(json_log)
    assert set(inside) == {"ts", "level", "logger", "message", "job_id"}
    assert (inside["level"], inside["logger"], inside["message"], inside["job_id"]) == (
        "WARNING", "xmodal.test", "step 3 of 9", "ftjob-abc")
    assert inside["ts"].endswith("+00:00") and "ValueError: boom" in broken["exc"]
    assert "job_id" not in outside


def test_api_and_worker_tag_records_with_the_job_id(client: TestClient, owner_key: OwnerKey,
                                                    monkeypatch: pytest.MonkeyPatch, json_log: io.StringIO) -> None:
    def explode(*_: Any, **__: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(jobs, "get_with_slot", explode)
    assert client.get("/v1/fine_tuning/jobs/ftjob-logged", headers=auth(owner_key.key)).status_code == 500
    monkeypatch.setattr(lifecycle, "_execute", lambda job_id, *_: lifecycle.log.warning("running") or "skipped")
    lifecycle.execute_job("ftjob-worked")
    records = json_lines(json_log)
    assert any(r["job_id"] == "ftjob-logged" and "unhandled error" in r["message"] for r in records if "job_id" in r)
    assert any(r.get("job_id") == "ftjob-worked" and r["message"] == "running" for r in records)


def test_xmodal_serve_writes_json_lines(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XMODAL_LOG_FORMAT", "json")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with running([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], log_path) as process:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        httpx.get(f"http://127.0.0.1:{port}/v1/fine_tuning/jobs/ftjob-x")
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"] == "uvicorn.access" and "/v1/fine_tuning/jobs/ftjob-x" in line["message"]
               for line in lines)


def test_the_worker_gives_celerys_handlers_the_json_formatter(settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from store.settings import reset_settings
    from worker.app import _json_logs

    handler = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("xmodal.test.celery")
    logger.addHandler(handler)
    try:
        monkeypatch.setenv("XMODAL_LOG_FORMAT", "json")
        reset_settings()
        _json_logs(logger=logger)  # what Celery's after_setup_logger signal calls
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        logger.removeHandler(handler)


def test_junk_paths_do_not_grow_metrics(settings: Settings, tmp_path: Path) -> None:
    """The red-team attack: thousands of distinct paths under `/dashboard/static/{path:path}` (the
    raw path became a label) or matching no route at all, then `/metrics` is no larger than before."""
    def junk(n: int) -> list[str]:
        return [f"/dashboard/static/INJECTED-{n}/b/c/d", f"/dashboard/static/INJECTED-{n}", f"/no/such/INJECTED-{n}/x",
                f"/v1/fine_tuning/jobs/INJECTED-{n}/events/stream", f"/v1/files/INJECTED-{n}/b"]

    with live_server(tmp_path) as url, httpx.Client(base_url=url, timeout=10.0) as http:
        for path in junk(0):  # each route template's series exists from here on
            http.get(path)
        before = http.get("/metrics").text
        for n in range(1, 301):
            for path in junk(n):
                assert http.get(path).status_code in (401, 404)
        after = http.get("/metrics").text
    assert "INJECTED" not in after
    # only the counts' digits grow; each raw path as a label would add a counter and a histogram
    assert len(after) - len(before) < 2000, (len(before), len(after))
