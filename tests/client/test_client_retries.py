"""The retry loop and the error tree, against httpx.MockTransport: which answers are retried, how
long the client waits, that every retry of a create carries the same Idempotency-Key."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from client import (
    APIConnectionError,
    Client,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
    XModalAPIError,
)
from client.http import RetryPolicy
from tests.client.fakes import Server, error, file_json, job_json


def test_a_429_is_retried_after_retry_after_with_the_same_idempotency_key(sleeps: list[float]) -> None:
    server = Server(error(429, "rate_limited", headers={"Retry-After": "3"}), httpx.Response(200, json=job_json()))
    job = server.client().jobs.create("file-1", "tiny-bert", "orca", seed=0)
    assert job.id == "ftjob-1" and job.status == "queued"
    assert sleeps == [3.0]
    first, second = server.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert json.loads(second.content) == {"training_file": "file-1", "model": "tiny-bert",
                                          "method": {"type": "orca"}, "seed": 0}


def test_each_create_call_has_its_own_key_unless_given_one(sleeps: list[float]) -> None:
    server = Server(httpx.Response(200, json=job_json()))
    client = server.client()
    client.jobs.create("file-1", "tiny-bert")
    client.jobs.create("file-1", "tiny-bert")
    client.jobs.create("file-1", "tiny-bert", idempotency_key="mine")
    keys = [request.headers["idempotency-key"] for request in server.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_an_upload_retried_after_503_resends_the_whole_file_under_one_key(sleeps: list[float],
                                                                          tmp_path: Path) -> None:
    dataset = tmp_path / "train.npz"
    dataset.write_bytes(b"npz-bytes" * 1000)
    server = Server(error(503, "database_unavailable", headers={"Retry-After": "2"}),
                    httpx.Response(502, text="<html>bad gateway</html>"), httpx.Response(200, json=file_json()))
    uploaded = server.client().files.upload(dataset)
    assert uploaded.id == "file-1" and uploaded.info == {"samples": 64}
    assert len(server.requests) == 3 and len({r.headers["idempotency-key"] for r in server.requests}) == 1
    assert all(b"npz-bytes" * 1000 in r.content and b'name="purpose"' in r.content for r in server.requests)
    assert sleeps[0] == 2.0 and 0.5 <= sleeps[1] < 1.0  # Retry-After, then backoff 0.5 * 2**1 with jitter


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    for retry, full in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(full / 2 <= delay < full for delay in delays) and len(set(delays)) > 1


def test_transport_errors_are_retried_then_named(sleeps: list[float]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    server = Server(refuse)
    with pytest.raises(APIConnectionError) as caught:
        server.client(max_retries=3).jobs.get("ftjob-1")
    assert str(caught.value) == "cannot reach http://xmodal.test: connection refused"
    assert len(server.requests) == 4 and len(sleeps) == 3


def test_a_read_timeout_then_success_returns_the_answer(sleeps: list[float]) -> None:
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    server = Server(time_out, httpx.Response(200, json=job_json(status="running")))
    assert server.client().jobs.get("ftjob-1").status == "running"


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 500])
def test_other_errors_are_not_retried(sleeps: list[float], status: int) -> None:
    server = Server(error(status, "some_code"))
    with pytest.raises(XModalAPIError):
        server.client().jobs.get("ftjob-1")
    assert len(server.requests) == 1 and sleeps == []


def test_retries_give_up_with_the_last_error(sleeps: list[float]) -> None:
    server = Server(error(503, "queue_unavailable", "the job queue is unreachable"))
    with pytest.raises(ServerError) as caught:
        server.client(max_retries=2).jobs.create("file-1", "tiny-bert")
    assert caught.value.code == "queue_unavailable" and len(server.requests) == 3 and len(sleeps) == 2


def test_a_retry_after_beyond_the_cap_is_left_to_the_caller(sleeps: list[float]) -> None:
    server = Server(error(429, "too_many_jobs", headers={"Retry-After": "600"}))
    with pytest.raises(RateLimitError) as caught:
        server.client().jobs.create("file-1", "tiny-bert")
    assert caught.value.retry_after == 600.0 and sleeps == [] and len(server.requests) == 1


def test_retry_after_as_an_http_date(sleeps: list[float]) -> None:
    server = Server(error(503, "busy", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
                    httpx.Response(200, json=job_json()))
    server.client().jobs.get("ftjob-1")
    assert sleeps == [0.0]  # a date in the past: retry at once


def test_max_retries_zero_sends_once(sleeps: list[float]) -> None:
    server = Server(error(503, "busy"))
    with pytest.raises(ServerError):
        server.client(max_retries=0).jobs.get("ftjob-1")
    assert len(server.requests) == 1


def test_the_error_shape_becomes_the_matching_exception() -> None:
    server = Server(error(404, "job_not_found", "no job with id 'ftjob-x'"),
                    error(409, "job_already_finished", "job 'ftjob-1' already succeeded; nothing to cancel"),
                    error(422, "invalid_parameter", "method.orca.training.lr: too small", "method.orca.training.lr"))
    client = server.client()
    with pytest.raises(NotFoundError) as missing:
        client.jobs.get("ftjob-x")
    assert (missing.value.status, missing.value.code, missing.value.param) == (404, "job_not_found", None)
    assert str(missing.value) == "no job with id 'ftjob-x' (404 job_not_found)"
    with pytest.raises(ConflictError):
        client.jobs.cancel("ftjob-1")
    with pytest.raises(UnprocessableEntityError) as invalid:
        client.jobs.create("file-1", "tiny-bert")
    assert invalid.value.param == "method.orca.training.lr" and invalid.value.message.endswith("too small")


def test_a_body_that_is_not_the_error_shape_still_gives_status_and_reason(sleeps: list[float]) -> None:
    server = Server(httpx.Response(502, text="<html>upstream down</html>"))
    with pytest.raises(ServerError) as caught:
        server.client(max_retries=0).files.list()
    assert (caught.value.status, caught.value.code) == (502, "bad_gateway")
    assert caught.value.message == "<html>upstream down</html>"


def test_ids_cannot_escape_their_path_segment() -> None:
    server = Server(httpx.Response(200, json=job_json()))
    server.client().jobs.get("../files/x?y")
    assert server.requests[0].url.raw_path == b"/v1/fine_tuning/jobs/..%2Ffiles%2Fx%3Fy"


def test_base_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMODAL_BASE_URL", "http://elsewhere:9000/")
    monkeypatch.setenv("XMODAL_API_KEY", "xm-env")
    server = Server(httpx.Response(200, json=job_json()))
    with Client(transport=httpx.MockTransport(server)) as client:
        assert client.base_url == "http://elsewhere:9000"
        client.jobs.get("ftjob-1")
    assert server.requests[0].headers["authorization"] == "Bearer xm-env"
    assert str(server.requests[0].url) == "http://elsewhere:9000/v1/fine_tuning/jobs/ftjob-1"
