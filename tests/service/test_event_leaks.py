"""What a job's events tell its owner about the deployment (issue 12, finding 10): not which host
and process ran the job; that stays in the server's log for its operators."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import httpx
import pytest

from store.settings import Settings
from tests.service.api_fixtures import auth, live_server
from tests.service.conftest import make_owner_key
from tests.service.test_worker import FakeRunner, submit
from worker.lifecycle import execute_job

HOST = "gpu-node-17.cluster.internal"


def test_events_do_not_name_the_workers_host_or_pid(settings: Settings, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: HOST)
    key = make_owner_key("alice").key
    _, job_id = submit(settings, owner="alice")
    with caplog.at_level(logging.INFO, logger="worker.lifecycle"):
        assert execute_job(job_id, settings, FakeRunner()) == "succeeded"

    with live_server(tmp_path) as url:
        listed = httpx.get(f"{url}/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}, headers=auth(key),
                           timeout=30)
    assert listed.status_code == 200, listed.text
    events = listed.json()["data"]
    assert "attempt 1 started" in [event["message"] for event in events]
    seen_by_owner = json.dumps(events)
    assert HOST not in seen_by_owner and f":{os.getpid()}:" not in seen_by_owner, seen_by_owner

    claimed = [record.getMessage() for record in caplog.records if "claimed by worker" in record.getMessage()]
    assert len(claimed) == 1 and f"{HOST}:{os.getpid()}:" in claimed[0]  # the operators still see it
