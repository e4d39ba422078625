"""Request shapes against the in-process app: every malformed request gets the right 4xx and the
error shape, never a 500; owners never see each other's objects."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from store.db import session_scope
from store.models import Job
from store.repositories import checkpoints, events, jobs, metrics
from store.repositories.metrics import NewPoint
from tests.service.api_fixtures import (
    assert_error,
    auth,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
    npz_bytes,
    upload,
)
from tests.service.conftest import OwnerKey, make_owner_key

ORCA = {"type": "orca", "orca": {"alignment": {"epochs": 1, "maxsamples": 16, "proxy": "digits"},
                                 "training": {"epochs": 1, "batch_size": 8}}}


@pytest.fixture
def file_id(client: TestClient, owner_key: OwnerKey) -> str:
    response = upload(client, owner_key.key, npz_bytes())
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def create_job(client: TestClient, key: str, **body: Any) -> Any:
    return client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)


def job_body(file_id: str, **overrides: Any) -> dict[str, Any]:
    return {"model": "tiny-bert", "training_file": file_id, "method": ORCA, **overrides}


# --- auth ---------------------------------------------------------------------------------------


def _v1_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every documented /v1 operation, with its path parameters filled with placeholder ids."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path.replace("{", "").replace("}", ""))
            for path, operations in paths.items() if path.startswith("/v1") for method in operations]


def test_every_v1_route_rejects_a_missing_wrong_or_revoked_key(client: TestClient, owner_key: OwnerKey) -> None:
    from store.repositories import keys

    with session_scope() as session:
        keys.revoke(session, owner_key.key[:12])
    routes = _v1_routes(client)
    assert len(routes) >= 12
    for method, path in routes:
        for headers in ({}, auth("xm-wrong"), auth(owner_key.key), {"Authorization": "Basic Zm9vOmJhcg=="}):
            response = client.request(method, path, headers=headers)
            assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_valid_key_is_accepted(client: TestClient, owner_key: OwnerKey) -> None:
    response = client.get("/v1/files", headers=auth(owner_key.key))
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}


# --- generic errors -----------------------------------------------------------------------------


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient, owner_key: OwnerKey) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/nothing-here", headers=auth(owner_key.key)), 404, "not_found")
    response = client.put("/v1/files", headers=auth(owner_key.key))
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]


def test_unhandled_exceptions_become_a_bare_500(client: TestClient, owner_key: OwnerKey,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from store.repositories import files

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(files, "list_files", explode)
    response = client.get("/v1/files", headers=auth(owner_key.key))
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text and error["param"] is None


# --- job creation -------------------------------------------------------------------------------


def test_create_job_queues_it_and_sends_the_message(client: TestClient, owner_key: OwnerKey, file_id: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import api.submission

    sent: list[str] = []
    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: sent.append(job_id))
    body = job_body(file_id, validation_file=file_id, seed=7, suffix="demo", metadata={"team": "dna"})
    response = create_job(client, owner_key.key, **body)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued" and sent == [job["id"]]
    assert job["model"] == "tiny-bert" and job["training_file"] == file_id == job["validation_file"]
    assert job["seed"] == 7 and job["suffix"] == "demo" and job["metadata"] == {"team": "dna"}
    assert job["method"]["type"] == "orca"
    assert job["method"]["orca"]["training"]["batch_size"] == 8 and job["method"]["orca"]["training"]["seed"] == 7
    assert job["attempt"] == 0 and job["progress"] is None and job["error"] is None and job["result"] is None
    assert isinstance(job["created_at"], int) and job["started_at"] is None and job["cancel_requested"] is False
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(owner_key.key)).json() == job


@pytest.mark.parametrize("epochs", ["auto", 3, None])
def test_create_job_accepts_auto_or_integer_epochs_and_a_time_budget(client: TestClient, owner_key: OwnerKey,
                                                                     file_id: str, epochs: Any) -> None:
    training = {"batch_size": 8, "time_budget_seconds": 90, **({} if epochs is None else {"epochs": epochs})}
    method = {"type": "orca", "orca": {**ORCA["orca"], "training": training}}
    response = create_job(client, owner_key.key, **job_body(file_id, method=method))
    assert response.status_code == 200, response.text
    stored = response.json()["method"]["orca"]["training"]
    assert stored["epochs"] == ("auto" if epochs is None else epochs) and stored["time_budget_seconds"] == 90


def test_the_seed_column_is_the_seed_the_job_runs_with(client: TestClient, owner_key: OwnerKey,
                                                      file_id: str) -> None:
    """Fails if the row's seed column is the request's seed (NULL without one) rather than the config's:
    the jobs list and an experiment's table once read different seeds for one job."""
    method = {"type": "orca", "orca": {**ORCA["orca"], "training": {**ORCA["orca"]["training"], "seed": 11}}}
    job = create_job(client, owner_key.key, **job_body(file_id, method=method)).json()  # no top-level seed
    with session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.seed == row.config["training"]["seed"] == job["seed"] == 11
        assert row.model == job["model"] and row.method == row.config["method"] == job["method"]["type"]


def test_create_job_really_reaches_the_filesystem_broker(client: TestClient, owner_key: OwnerKey, file_id: str,
                                                         settings: Any) -> None:
    response = create_job(client, owner_key.key, **job_body(file_id))
    assert response.status_code == 200, response.text
    messages = list((settings.broker_dir / "queue").iterdir())
    assert len(messages) == 1 and response.json()["id"] in messages[0].read_text()


@pytest.mark.parametrize(("body", "status", "param"), [
    ({}, 422, "model"),
    ({"model": "tiny-bert"}, 422, "training_file"),
    ({"model": 5, "training_file": "FILE"}, 422, "model"),
    ({"model": "tiny-bert", "training_file": ["a"]}, 422, "training_file"),
    ({"model": "", "training_file": "FILE"}, 422, "model"),
    ({"model": "tiny-bert", "training_file": "FILE", "method": "orca"}, 422, "method"),
    ({"model": "tiny-bert", "training_file": "FILE", "method": {"type": "magic"}}, 422, "method.type"),
    ({"model": "tiny-bert", "training_file": "FILE", "method": {"type": "orca", "pare": {}}}, 422, "method"),
    ({"model": "tiny-bert", "training_file": "FILE", "method": {"type": "orca", "orca": {"training": {"lr": -1}}}},
     422, "method.orca.training.lr"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"batch_size": 0}}}}, 422, "method.orca.training.batch_size"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"epochs": 10**9}}}}, 422, "method.orca.training.epochs"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"epochs": "many"}}}}, 422, "method.orca.training.epochs"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"epochs": "Auto"}}}}, 422, "method.orca.training.epochs"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"time_budget_seconds": 0}}}}, 422,
     "method.orca.training.time_budget_seconds"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"training": {"time_budget_seconds": "1h"}}}}, 422,
     "method.orca.training.time_budget_seconds"),
    ({"model": "tiny-bert", "training_file": "FILE",
      "method": {"type": "orca", "orca": {"trainnig": {"epochs": 1}}}}, 422, "method.orca.trainnig"),
    ({"model": "tiny-bert", "training_file": "FILE", "method": {"type": "orca", "orca": [1]}}, 422, "method.orca"),
    ({"model": "tiny-bert", "training_file": "FILE", "seed": -1}, 422, "seed"),
    ({"model": "tiny-bert", "training_file": "FILE", "seed": "abc"}, 422, "seed"),
    ({"model": "tiny-bert", "training_file": "FILE", "suffix": "s" * 65}, 422, "suffix"),
    ({"model": "tiny-bert", "training_file": "FILE", "metadata": {"k": 1}}, 422, "metadata.k"),
    ({"model": "tiny-bert", "training_file": "FILE", "metadata": {f"k{i}": "v" for i in range(17)}}, 422, "metadata"),
    ({"model": "tiny-bert", "training_file": "FILE", "metadata": {"k": "v" * 513}}, 422, "metadata.k"),
    ({"model": "tiny-bert", "training_file": "FILE", "hyperparameters": {}}, 422, "hyperparameters"),
    ({"model": "tiny-bert", "training_file": "file-doesnotexist"}, 404, "training_file"),
    ({"model": "tiny-bert", "training_file": "FILE", "validation_file": "file-doesnotexist"}, 404, "validation_file"),
])
def test_malformed_job_requests(client: TestClient, owner_key: OwnerKey, file_id: str, body: dict[str, Any],
                                status: int, param: str) -> None:
    body = {name: file_id if value == "FILE" else value for name, value in body.items()}
    assert_error(create_job(client, owner_key.key, **body), status, param=param)
    with session_scope() as session:
        assert session.query(Job).count() == 0


def test_broken_json_and_wrong_content_type(client: TestClient, owner_key: OwnerKey) -> None:
    response = client.post("/v1/fine_tuning/jobs", headers={**auth(owner_key.key), "Content-Type": "application/json"},
                           content=b"{not json")
    assert_error(response, 422, "invalid_json")
    assert_error(client.post("/v1/fine_tuning/jobs", headers=auth(owner_key.key), content=b"model=x"), 422)
    assert_error(client.post("/v1/fine_tuning/jobs", headers=auth(owner_key.key), json=[1, 2]), 422)


def test_idempotency_key_returns_the_first_job(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    headers = {**auth(owner_key.key), "Idempotency-Key": "retry-1"}
    first = client.post("/v1/fine_tuning/jobs", headers=headers, json=job_body(file_id)).json()
    second = client.post("/v1/fine_tuning/jobs", headers=headers, json=job_body(file_id)).json()
    assert first["id"] == second["id"]
    other = client.post("/v1/fine_tuning/jobs", headers={**headers, "Idempotency-Key": "retry-2"},
                        json=job_body(file_id)).json()
    assert other["id"] != first["id"]


def test_unreachable_broker_cancels_the_job_and_answers_503(client: TestClient, owner_key: OwnerKey, file_id: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import api.submission

    def down(job_id: str, settings: Any = None) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(api.submission, "send_run_job", down)
    assert_error(create_job(client, owner_key.key, **job_body(file_id)), 503, "queue_unavailable")
    listed = client.get("/v1/fine_tuning/jobs", headers=auth(owner_key.key)).json()["data"]
    assert [job["status"] for job in listed] == ["cancelled"]


# --- owner isolation ----------------------------------------------------------------------------


def _seed_job_children(job_id: str) -> str:
    with session_scope() as session:
        events.append(session, job_id, stage="setup", message="hello")
        metrics.append_many(session, job_id, [NewPoint("loss", 1.0, 1, "train")])
        return checkpoints.create(session, job_id, step=1, epoch=0, stage="refine", sha256="b" * 64, bytes=3).id


def test_another_owners_objects_are_404_and_never_listed(client: TestClient, owner_key: OwnerKey,
                                                         file_id: str) -> None:
    job = create_job(client, owner_key.key, **job_body(file_id)).json()
    checkpoint_id = _seed_job_children(job["id"])
    bob = make_owner_key("bob").key
    base = f"/v1/fine_tuning/jobs/{job['id']}"
    for method, path in [("GET", f"/v1/files/{file_id}"), ("DELETE", f"/v1/files/{file_id}"),
                         ("GET", f"/v1/files/{file_id}/content"), ("GET", base), ("POST", f"{base}/cancel"),
                         ("GET", f"{base}/events"), ("GET", f"{base}/metrics"), ("GET", f"{base}/checkpoints"),
                         ("GET", f"{base}/checkpoints/{checkpoint_id}/content")]:
        assert_error(client.request(method, path, headers=auth(bob)), 404)
    for path in ("/v1/files", "/v1/fine_tuning/jobs", f"/v1/files?after={file_id}",
                 f"/v1/fine_tuning/jobs?after={job['id']}"):
        assert client.get(path, headers=auth(bob)).json()["data"] == []
    assert_error(create_job(client, bob, **job_body(file_id)), 404, "file_not_found", "training_file")
    # and alice still has everything
    assert client.get(f"{base}/events", headers=auth(owner_key.key)).json()["data"][0]["message"] == "hello"
    assert client.get(base, headers=auth(owner_key.key)).json()["status"] == "queued"


# --- listing, cancel, children ------------------------------------------------------------------


def test_lists_page_with_after_and_limit(client: TestClient, owner_key: OwnerKey) -> None:
    ids = [upload(client, owner_key.key, npz_bytes(seed=i)).json()["id"] for i in range(5)]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = client.get("/v1/files", headers=auth(owner_key.key),
                          params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    assert_error(client.get("/v1/files", headers=auth(owner_key.key), params={"limit": 0}), 422, param="limit")
    assert_error(client.get("/v1/files", headers=auth(owner_key.key), params={"limit": 101}), 422, param="limit")
    assert_error(client.get("/v1/files", headers=auth(owner_key.key), params={"limit": "x"}), 422, param="limit")


def test_job_list_filters_by_status(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    first = create_job(client, owner_key.key, **job_body(file_id)).json()
    second = create_job(client, owner_key.key, **job_body(file_id)).json()
    client.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel", headers=auth(owner_key.key))
    listed = client.get("/v1/fine_tuning/jobs", headers=auth(owner_key.key), params={"status": "queued"}).json()
    assert [job["id"] for job in listed["data"]] == [second["id"]]
    assert_error(client.get("/v1/fine_tuning/jobs", headers=auth(owner_key.key), params={"status": "done"}),
                 422, param="status")


def _set_status(job_id: str, status: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = status


def test_cancel_queued_running_and_finished_jobs(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    def cancel(job_id: str) -> Any:
        return client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth(owner_key.key))

    queued = create_job(client, owner_key.key, **job_body(file_id)).json()
    cancelled = cancel(queued["id"]).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert cancel(queued["id"]).json()["status"] == "cancelled"  # idempotent

    running = create_job(client, owner_key.key, **job_body(file_id)).json()
    _set_status(running["id"], "running")
    stopping = cancel(running["id"]).json()
    assert stopping["status"] == "running" and stopping["cancel_requested"] is True

    for status in ("succeeded", "failed"):
        done = create_job(client, owner_key.key, **job_body(file_id)).json()
        _set_status(done["id"], status)
        assert_error(cancel(done["id"]), 409, "job_already_finished")
    assert_error(cancel("ftjob-nope"), 404, "job_not_found")


def test_events_metrics_and_checkpoints_listing(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    job_id = create_job(client, owner_key.key, **job_body(file_id)).json()["id"]
    with session_scope() as session:
        for i in range(3):
            events.append(session, job_id, stage="refine", message=f"epoch {i}", data={"epoch": i})
        metrics.append_many(session, job_id, [NewPoint("loss", 1.0 / (s + 1), s, "train", 0) for s in range(5)]
                            + [NewPoint("accuracy", 0.5, 4, "validation", 0)])
        checkpoints.create(session, job_id, step=5, epoch=0, stage="refine", sha256="c" * 64, bytes=10,
                           metrics={"accuracy": 0.5}, final=True)
    base = f"/v1/fine_tuning/jobs/{job_id}"
    headers = auth(owner_key.key)
    page = client.get(f"{base}/events", headers=headers, params={"limit": 2}).json()
    assert [e["message"] for e in page["data"]] == ["epoch 0", "epoch 1"] and page["has_more"]
    assert page["data"][0]["object"] == "fine_tuning.job.event" and page["data"][0]["data"] == {"epoch": 0}
    rest = client.get(f"{base}/events", headers=headers, params={"after": page["last_id"]}).json()
    assert [e["message"] for e in rest["data"]] == ["epoch 2"] and not rest["has_more"]

    losses = client.get(f"{base}/metrics", headers=headers, params={"key": "loss", "min_step": 1, "max_step": 3}).json()
    assert [(p["step"], p["split"]) for p in losses["data"]] == [(1, "train"), (2, "train"), (3, "train")]
    assert losses["data"][0]["object"] == "fine_tuning.job.metric"
    validation = client.get(f"{base}/metrics", headers=headers, params={"split": "validation"}).json()["data"]
    assert [(p["key"], p["value"]) for p in validation] == [("accuracy", 0.5)]
    assert_error(client.get(f"{base}/metrics", headers=headers, params={"min_step": -1}), 422, param="min_step")
    assert_error(client.get(f"{base}/events", headers=headers, params={"after": "abc"}), 422, param="after")

    listed = client.get(f"{base}/checkpoints", headers=headers).json()
    (checkpoint,) = listed["data"]
    assert checkpoint["object"] == "fine_tuning.job.checkpoint" and checkpoint["fine_tuning_job_id"] == job_id
    assert (checkpoint["step"], checkpoint["sha256"], checkpoint["bytes"]) == (5, "c" * 64, 10)
    assert checkpoint["final"] is True
    missing = client.get(f"{base}/checkpoints/ftckpt-nope/content", headers=headers)
    assert_error(missing, 404, "checkpoint_not_found")
    for path in ("/v1/fine_tuning/jobs/ftjob-nope", "/v1/fine_tuning/jobs/ftjob-nope/events",
                 "/v1/fine_tuning/jobs/ftjob-nope/metrics", "/v1/fine_tuning/jobs/ftjob-nope/checkpoints"):
        assert_error(client.get(path, headers=headers), 404, "job_not_found")


def test_running_job_shows_progress(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    job_id = create_job(client, owner_key.key, **job_body(file_id)).json()["id"]
    with session_scope() as session:
        claimed = jobs.claim(session, job_id, "w1", 60)
        assert claimed is not None
        jobs.set_progress(session, job_id, "w1", {"stage": "refine", "step": 3, "total_steps": 12,
                                                  "fraction": 0.25, "eta_seconds": 9.5})
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(owner_key.key)).json()
    assert job["status"] == "running" and job["attempt"] == 1 and isinstance(job["started_at"], int)
    assert job["progress"] == {"stage": "refine", "step": 3, "total_steps": 12, "fraction": 0.25, "eta_seconds": 9.5}


def test_file_get_delete_and_job_on_deleted_file(client: TestClient, owner_key: OwnerKey, file_id: str) -> None:
    headers = auth(owner_key.key)
    assert client.get(f"/v1/files/{file_id}", headers=headers).json()["status"] == "processed"
    assert client.delete(f"/v1/files/{file_id}", headers=headers).json() == {"id": file_id, "object": "file",
                                                                              "deleted": True}
    assert_error(client.get(f"/v1/files/{file_id}", headers=headers), 404, "file_not_found")
    assert_error(client.delete(f"/v1/files/{file_id}", headers=headers), 404, "file_not_found")
    assert_error(create_job(client, owner_key.key, **job_body(file_id)), 404, "file_not_found", "training_file")
