"""Faults the worker side survives, each caused for real: SIGTERM to a worker, a broker that lost
its messages, a job outliving Redis' visibility timeout, the database going away mid-job and
under the API.

The slow-job tests run test_worker's fake runner inside a real `xmodal worker` (see
test_worker_process); the database outage goes through a TCP proxy that is cut (tcp_proxy).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from store.db import dispose_engines, session_scope
from store.queue import GPU_QUEUE, pending_job_ids, send_run_job
from store.repositories import checkpoints, events, metrics
from store.settings import Settings, get_settings, reset_settings
from tests.service.conftest import make_owner_key
from tests.service.tcp_proxy import TcpProxy
from tests.service.test_worker import FakeRunner, load, submit
from tests.service.test_worker_process import deployment, job, run_worker, start_worker, wait_for, worker_log
from worker.lifecycle import execute_job
from worker.reaper import resend_lost_messages

__all__ = ["deployment", "run_worker", "worker_log"]  # fixtures used here, defined there


def event_messages(owner_id: str, job_id: str) -> list[str]:
    with session_scope() as s:
        return [e.message for e in events.list_events(s, owner_id, job_id, limit=500).items]


# ---- graceful shutdown ------------------------------------------------------------------------
def test_sigterm_in_a_job_process_checkpoints_and_hands_the_job_back(settings: Settings) -> None:
    owner_id, job_id = submit(settings)
    handler_before = signal.getsignal(signal.SIGTERM)

    def terminate_at(step: int) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    assert execute_job(job_id, settings, FakeRunner(on_step=terminate_at)) == "requeued"
    assert signal.getsignal(signal.SIGTERM) is handler_before
    handed_back = load(job_id)
    assert (handed_back.status, handed_back.attempt, handed_back.lease_owner) == ("queued", 0, None)
    with session_scope() as s:
        assert checkpoints.latest(s, job_id).step == 3  # type: ignore[union-attr]
    assert resend_lost_messages(settings, grace_seconds=0) == [job_id]  # what the worker does once stopped
    assert any("re-queued with its checkpoint at step 3" in m for m in event_messages(owner_id, job_id))

    resumed = FakeRunner()
    assert execute_job(job_id, settings, resumed) == "succeeded"
    assert resumed.calls[0]["resume_step"] == 3
    assert load(job_id).attempt == 1  # the shutdown gave its attempt back


@pytest.mark.integration
def test_sigterm_to_a_worker_requeues_its_job_and_another_worker_resumes_it(
        deployment: Settings, run_worker: list, worker_log: Path) -> None:
    run_worker.append(start_worker(worker_log, fake_step_seconds=0.5))
    owner_id, job_id = submit(deployment)
    send_run_job(job_id, deployment)

    def has_checkpoint() -> bool:
        with session_scope() as s:
            return checkpoints.latest(s, job_id) is not None

    wait_for(has_checkpoint, 60, worker_log, "a first checkpoint")
    started = time.monotonic()
    run_worker[0].send_signal(signal.SIGTERM)  # the worker's main process only, as `docker stop` does
    run_worker[0].wait(timeout=30)
    stop_seconds = time.monotonic() - started
    handed_back = job(job_id)
    assert handed_back.status == "queued", worker_log.read_text()[-3000:]
    assert stop_seconds < 10
    assert pending_job_ids(deployment) == {job_id}, worker_log.read_text()[-3000:]  # sent by the stopped worker
    run_worker.append(start_worker(worker_log.with_suffix(".2.log"), fake_step_seconds=0.05))
    wait_for(lambda: job(job_id).status == "succeeded", 30, worker_log.with_suffix(".2.log"), "the resumed job")
    messages = event_messages(owner_id, job_id)
    assert any("worker shutting down" in m for m in messages)
    assert any(m.startswith("attempt 1 started") and "resuming from step" in m for m in messages)
    print(f"SIGTERM → worker exited with the job re-queued in {stop_seconds:.2f} s")


# ---- lost broker messages ---------------------------------------------------------------------
def test_only_queued_jobs_without_a_message_are_resent(settings: Settings) -> None:
    _, with_message = submit(settings)
    send_run_job(with_message, settings)
    _, without_message = submit(settings)
    assert resend_lost_messages(settings) == []  # both are inside the grace period
    assert resend_lost_messages(settings, grace_seconds=0) == [without_message]
    assert pending_job_ids(settings) == {with_message, without_message}
    assert resend_lost_messages(settings, grace_seconds=0) == []


def _empty_the_queue(settings: Settings) -> None:
    """What a Redis restart without persistence, or a purge, leaves: no message at all."""
    if settings.broker_url.startswith("redis://"):
        redis.Redis.from_url(settings.broker_url).delete(GPU_QUEUE)
    else:
        for path in (settings.broker_dir / "queue").glob("*.msg"):
            path.unlink()


@pytest.mark.integration
def test_a_job_whose_message_was_lost_still_runs(deployment: Settings, run_worker: list, worker_log: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, job_id = submit(deployment)
    send_run_job(job_id, deployment)
    _empty_the_queue(deployment)
    assert pending_job_ids(deployment) == set()
    monkeypatch.setenv("XMODAL_REQUEUE_GRACE_SECONDS", "0")
    run_worker.append(start_worker(worker_log, fake_step_seconds=0.01))
    wait_for(lambda: job(job_id).status == "succeeded", 60, worker_log, "the job with a lost message to run")
    assert "message re-sent" in worker_log.read_text()


# ---- a job longer than Redis' visibility timeout ------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_a_job_longer_than_the_visibility_timeout_is_delivered_once(
        pg_settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch, run_worker: list,
        worker_log: Path) -> None:
    """Redis re-delivers an unacknowledged message after `redis_visibility_seconds` (2 s here);
    kombu scans every 10 s. The job runs 24 s: without the heartbeat re-stamping its message, a scan
    puts the message back on the queue (seen here) and the worker receives it a second time."""
    for name, value in {"BROKER_URL": redis_url, "REDIS_VISIBILITY_SECONDS": "2", "LEASE_SECONDS": "3",
                        "HEARTBEAT_SECONDS": "0.5"}.items():
        monkeypatch.setenv(f"XMODAL_{name}", value)
    reset_settings()
    settings = get_settings()
    broker = redis.Redis.from_url(redis_url)
    run_worker.append(start_worker(worker_log, fake_step_seconds=4.0))
    _, job_id = submit(settings)
    send_run_job(job_id, settings)
    wait_for(lambda: job(job_id).status == "running", 30, worker_log, "the long job to start")
    requeued_copies = 0
    while job(job_id).status == "running":
        requeued_copies = max(requeued_copies, broker.llen(GPU_QUEUE))
        time.sleep(0.5)
    assert job(job_id).status == "succeeded"
    log = worker_log.read_text()
    receipts = [line for line in log.splitlines() if "xmodal.run_job[" in line and line.rstrip().endswith("received")]
    assert (requeued_copies, len(receipts)) == (0, 1), log[-3000:]


# ---- the database going away ------------------------------------------------------------------
@pytest.fixture
def proxied_postgres(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, TcpProxy]]:
    """pg_settings, reached through a proxy the test can cut."""
    url = make_url(pg_settings.database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    monkeypatch.setenv("XMODAL_DATABASE_URL", url.set(port=proxy.port).render_as_string(hide_password=False))
    reset_settings()
    dispose_engines()
    yield get_settings(), proxy
    proxy.close()
    dispose_engines()


@pytest.mark.integration
def test_the_api_answers_503_while_the_database_is_away(proxied_postgres: tuple[Settings, TcpProxy],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from api.main import create_app

    _, proxy = proxied_postgres
    monkeypatch.setenv("XMODAL_API_KEY_CACHE_SECONDS", "0")  # a cached key needs no database: look it up
    reset_settings()
    owner = make_owner_key()
    auth = {"Authorization": f"Bearer {owner.key}"}
    with TestClient(create_app()) as client:
        assert client.get("/v1/fine_tuning/jobs", headers=auth).status_code == 200
        with proxy.outage():
            # a POST is authenticated before its body is read, outside the route (api/guard.py): a 503 too
            for method, path in (("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/files"),
                                 ("GET", "/v1/fine_tuning/jobs/ftjob-x"), ("POST", "/v1/fine_tuning/jobs")):
                response = client.request(method, path, headers=auth, json={})
                assert response.status_code == 503, (path, response.text)
                assert response.json() == {"error": {"code": "database_unavailable", "param": None,
                                                     "message": "the database is unreachable; try again shortly"}}
                assert response.headers["Retry-After"] == "2"
            assert client.get("/readyz").status_code == 503
        assert client.get("/v1/fine_tuning/jobs", headers=auth).status_code == 200


@pytest.mark.integration
def test_a_job_rides_out_a_database_outage(proxied_postgres: tuple[Settings, TcpProxy]) -> None:
    settings, proxy = proxied_postgres
    owner_id, job_id = submit(settings)
    outage_seconds = 3.0

    def cut_at(step: int) -> None:
        if step == 2:
            proxy.cut()
            threading.Timer(outage_seconds, proxy.restore).start()

    started = time.monotonic()
    assert execute_job(job_id, settings, FakeRunner(on_step=cut_at)) == "succeeded"
    assert time.monotonic() - started >= outage_seconds  # it waited the outage out
    with session_scope() as s:
        assert [p.step for p in metrics.list_metrics(s, owner_id, job_id, key="loss").items] == [1, 2, 3, 4, 5, 6]
    assert load(job_id).status == "succeeded"


@pytest.mark.integration
def test_an_exhausted_connection_pool_is_a_503_not_a_500(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection busy for the pool timeout is overload: the client is told to retry."""
    import store.db
    from api.main import create_app

    owner = make_owner_key()
    monkeypatch.setenv("XMODAL_DB_POOL_SIZE", "1")
    reset_settings()
    monkeypatch.setattr(store.db, "POOL_TIMEOUT_S", 0.2)
    dispose_engines()
    with TestClient(create_app()) as client, store.db.get_engine().connect():  # the only connection, held
        response = client.get("/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {owner.key}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_busy" and response.headers["Retry-After"] == "2"
    dispose_engines()
