"""`/v1/experiments` on SQLite and PostgreSQL: a grid becomes one job per cell and seed, every cell is
validated before anything is made, the grid respects the size cap and the active-job limit as a
whole, Idempotency-Key replays, the table's mean ± std comes from the jobs' results, owners are
isolated, cancel stops the unfinished jobs; migration 0003 round-trips."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text, update

from api.main import create_app
from migrations import alembic_config, upgrade
from store.db import make_engine, session_scope
from store.models import Experiment, Job
from store.settings import Settings, reset_settings
from tests.service.api_fixtures import QUICK_ORCA, assert_error, auth, npz_bytes, upload, limits_fixture, sent_fixture  # noqa: F401 (fixtures)
from tests.service.conftest import OwnerKey, make_owner_key

GRID = {"methods": ["orca", "finetune"], "alignment_epochs": [0, 2], "freeze": ["none", "body"], "seeds": [0, 1, 2]}


@pytest.fixture
def client(backend_settings: Settings, sent: list[str]) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def alice(backend_settings: Settings) -> OwnerKey:
    return make_owner_key("alice")


@pytest.fixture
def file_id(client: TestClient, alice: OwnerKey) -> str:
    return str(upload(client, alice.key, npz_bytes()).json()["id"])


def post(client: TestClient, key: str, file_id: str, grid: dict[str, Any], method: dict[str, Any] = QUICK_ORCA,
         idempotency_key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {**auth(key), **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
    return client.post("/v1/experiments", headers=headers,
                       json={"model": "tiny-bert", "training_file": file_id, "method": method, "grid": grid, **extra})


def job_count() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def set_jobs(job_ids: list[str], status: str, test: dict[str, float] | None = None) -> None:
    """Play the worker: finish jobs with a classification summary like core.run's."""
    result = None if test is None else {"summary": {"task": "classification", "method": "orca", "steps": 3,
                                                    "validation": {"error": 0.9}, "test": test}}
    with session_scope() as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(status=status, result=result))


def test_the_grid_makes_one_job_per_cell_and_seed(client: TestClient, alice: OwnerKey, file_id: str,
                                                  sent: list[str]) -> None:
    response = post(client, alice.key, file_id, GRID, name="ablation", metadata={"paper": "orca-ablation"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "experiment" and body["id"].startswith("exp-") and body["name"] == "ablation"
    assert body["status"] == "running" and body["job_counts"]["queued"] == 24 and body["metric"] is None
    assert body["grid"] == {**GRID, "pretrained": [True]}  # the axis left out keeps the base's value
    cells = body["cells"]
    assert [cell["params"] for cell in cells[:3]] == [
        {"method": "orca", "alignment_epochs": 0, "freeze": "none", "pretrained": True},
        {"method": "orca", "alignment_epochs": 0, "freeze": "body", "pretrained": True},
        {"method": "orca", "alignment_epochs": 2, "freeze": "none", "pretrained": True}]
    assert len(cells) == 8 and all(len(cell["jobs"]) == 3 and cell["n"] == 0 for cell in cells)
    job_ids = [job["id"] for cell in cells for job in cell["jobs"]]
    assert sorted(sent) == sorted(job_ids) and len(set(job_ids)) == 24
    last = cells[-1]
    job = client.get(f"/v1/fine_tuning/jobs/{last['jobs'][2]['id']}", headers=auth(alice.key)).json()
    sections = job["method"]["finetune"]
    assert job["method"]["type"] == "finetune" and job["seed"] == 2 and sections["training"]["seed"] == 2
    assert sections["alignment"]["epochs"] == 2 and sections["freeze"] == "body" and sections["body"]["pretrained"]
    assert sections["training"]["batch_size"] == 8  # the base's other settings carry into every cell
    assert client.get(f"/v1/experiments/{body['id']}", headers=auth(alice.key)).json() == body


def test_axes_default_to_the_base_config(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    base = {"type": "finetune", "finetune": {"freeze": "embedder", "body": {"pretrained": False},
                                             "training": {"epochs": 1, "seed": 7}}}
    body = post(client, alice.key, file_id, {"pretrained": [True, False]}, method=base).json()
    assert body["grid"] == {"methods": ["finetune"], "alignment_epochs": [60], "freeze": ["embedder"],
                            "pretrained": [True, False], "seeds": [7]}
    assert [cell["jobs"][0]["seed"] for cell in body["cells"]] == [7, 7]


@pytest.mark.parametrize(("grid", "method", "param"), [
    ({"freeze": ["none", "everything"]}, QUICK_ORCA, "grid.freeze"),
    ({"alignment_epochs": [1, -1]}, QUICK_ORCA, "grid.alignment_epochs"),
    ({"methods": ["orca", "lora"]}, QUICK_ORCA, "grid.methods"),
    ({"seeds": [0, 2**31]}, QUICK_ORCA, "grid.seeds"),
    ({"seeds": [1, 1]}, QUICK_ORCA, "grid.seeds"),
    ({"pretrained": []}, QUICK_ORCA, "grid.pretrained"),
    ({"depth": [1]}, QUICK_ORCA, "grid.depth"),
    ({"seeds": [0, 1]}, {"type": "orca", "orca": {"training": {"lr": -1}}}, "method.orca.training.lr"),
])
def test_a_bad_cell_is_a_422_naming_its_field_and_makes_nothing(client: TestClient, alice: OwnerKey, file_id: str,
                                                                grid: dict[str, Any], method: dict[str, Any],
                                                                param: str, sent: list[str]) -> None:
    assert_error(post(client, alice.key, file_id, grid, method=method), 422, param=param)
    assert job_count() == 0 and sent == []
    assert client.get("/v1/experiments", headers=auth(alice.key)).json()["data"] == []


def test_the_grid_size_is_capped(client: TestClient, alice: OwnerKey, file_id: str, limits: Any) -> None:
    limits(max_experiment_jobs=4)
    error = assert_error(post(client, alice.key, file_id, {"freeze": ["none", "body"], "seeds": [0, 1, 2]}),
                         422, "experiment_too_large", "grid")
    assert "6 jobs" in error["message"]
    assert post(client, alice.key, file_id, {"freeze": ["none", "body"], "seeds": [0, 1]}).status_code == 200


def test_the_whole_grid_must_fit_under_the_active_job_limit(client: TestClient, alice: OwnerKey, file_id: str,
                                                            limits: Any) -> None:
    limits(max_active_jobs=5)
    single = client.post("/v1/fine_tuning/jobs", headers=auth(alice.key),
                         json={"model": "tiny-bert", "training_file": file_id, "method": QUICK_ORCA})
    assert single.status_code == 200
    refused = post(client, alice.key, file_id, {"seeds": [0, 1, 2, 3, 4]})
    assert_error(refused, 429, "too_many_jobs")
    assert refused.headers["retry-after"] and job_count() == 1  # all or nothing
    assert post(client, alice.key, file_id, {"seeds": [0, 1, 2, 3]}).status_code == 200
    limits(max_active_jobs=0)  # off
    assert post(client, alice.key, file_id, {"seeds": list(range(10))}).status_code == 200


def test_missing_file_and_disallowed_model_make_nothing(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    assert_error(post(client, alice.key, "file-nope", {"seeds": [0, 1]}), 404, "file_not_found", "training_file")
    response = client.post("/v1/experiments", headers=auth(alice.key),
                           json={"model": "/etc/not-a-model", "training_file": file_id, "method": QUICK_ORCA})
    assert_error(response, 422, "model_not_allowed")
    assert job_count() == 0


def test_an_idempotent_retry_returns_the_first_experiment(client: TestClient, alice: OwnerKey, file_id: str,
                                                          sent: list[str]) -> None:
    first = post(client, alice.key, file_id, {"seeds": [0, 1]}, idempotency_key="exp-1")
    again = post(client, alice.key, file_id, {"seeds": [0, 1]}, idempotency_key="exp-1")
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and job_count() == 2 and len(sent) == 2
    assert_error(post(client, alice.key, file_id, {"seeds": [0, 1, 2]}, idempotency_key="exp-1"),
                 422, "idempotency_key_reused")
    other = post(client, alice.key, file_id, {"seeds": [0, 1]}, idempotency_key="exp-2")
    assert other.json()["id"] != first.json()["id"] and job_count() == 4


def test_the_table_is_mean_and_sample_std_over_finished_seeds(client: TestClient, alice: OwnerKey,
                                                             file_id: str) -> None:
    body = post(client, alice.key, file_id, {"freeze": ["none", "body"], "seeds": [0, 1, 2]}).json()
    full, partial = ([job["id"] for job in cell["jobs"]] for cell in body["cells"])
    for job_id, error in zip(full, (0.10, 0.20, 0.30)):
        set_jobs([job_id], "succeeded", {"error": error, "f1_error": 0.5})
    set_jobs(partial[:1], "succeeded", {"error": 0.5, "f1_error": 0.5})
    set_jobs(partial[1:2], "succeeded", {"error": 0.7, "f1_error": 0.5})
    set_jobs(partial[2:], "running")

    table = client.get(f"/v1/experiments/{body['id']}", headers=auth(alice.key)).json()
    assert table["metric"] == "error" and table["status"] == "running"
    first, second = table["cells"]
    assert first["status"] == "succeeded" and first["n"] == 3
    assert first["mean"] == pytest.approx(0.2) and first["std"] == pytest.approx(0.1)
    assert [job["test_metric"] for job in first["jobs"]] == pytest.approx([0.1, 0.2, 0.3])
    assert second["status"] == "running" and second["n"] == 2
    assert second["mean"] == pytest.approx(0.6) and second["std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert second["jobs"][2]["test_metric"] is None

    set_jobs(partial[2:], "failed")
    table = client.get(f"/v1/experiments/{body['id']}", headers=auth(alice.key)).json()
    assert table["status"] == "failed" and table["cells"][1]["n"] == 2  # a failed seed adds nothing
    assert table["job_counts"] == {"queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0}


def test_one_seed_has_no_std_and_the_config_metric_wins(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    method = {"type": "orca", "orca": {**QUICK_ORCA["orca"], "evaluation": {"metric": "f1_error"}}}
    body = post(client, alice.key, file_id, {}, method=method).json()
    set_jobs([body["cells"][0]["jobs"][0]["id"]], "succeeded", {"error": 0.25, "f1_error": 0.4})
    table = client.get(f"/v1/experiments/{body['id']}", headers=auth(alice.key)).json()
    assert table["metric"] == "f1_error" and table["status"] == "succeeded"
    assert table["cells"][0] | {"jobs": None} == {
        "params": {"method": "orca", "alignment_epochs": 1, "freeze": "none", "pretrained": True},
        "status": "succeeded", "mean": 0.4, "std": None, "n": 1, "jobs": None}


def test_another_owners_experiment_is_not_found(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    mine = post(client, alice.key, file_id, {"seeds": [0, 1]}).json()["id"]
    bob = make_owner_key("bob")
    assert_error(client.get(f"/v1/experiments/{mine}", headers=auth(bob.key)), 404, "experiment_not_found")
    assert_error(client.post(f"/v1/experiments/{mine}/cancel", headers=auth(bob.key)), 404, "experiment_not_found")
    assert client.get("/v1/experiments", headers=auth(bob.key)).json()["data"] == []
    assert_error(post(client, bob.key, file_id, {}), 404, "file_not_found")  # nor her files
    assert client.get(f"/v1/experiments/{mine}", headers=auth(alice.key)).json()["job_counts"]["queued"] == 2


def test_the_list_pages_newest_first(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    made = [post(client, alice.key, file_id, {"seeds": [seed]}).json()["id"] for seed in range(3)]
    first = client.get("/v1/experiments?limit=2", headers=auth(alice.key)).json()
    assert [item["id"] for item in first["data"]] == made[:0:-1] and first["has_more"]
    assert all(len(item["cells"][0]["jobs"]) == 1 for item in first["data"])
    rest = client.get(f"/v1/experiments?limit=2&after={first['last_id']}", headers=auth(alice.key)).json()
    assert [item["id"] for item in rest["data"]] == made[:1] and not rest["has_more"]


def test_cancel_stops_unfinished_jobs_and_keeps_results(client: TestClient, alice: OwnerKey, file_id: str) -> None:
    body = post(client, alice.key, file_id, {"seeds": [0, 1, 2, 3]}).json()
    done, running, *queued = [job["id"] for job in body["cells"][0]["jobs"]]
    set_jobs([done], "succeeded", {"error": 0.3, "f1_error": 0.3})
    set_jobs([running], "running")
    cancelled = client.post(f"/v1/experiments/{body['id']}/cancel", headers=auth(alice.key))
    assert cancelled.status_code == 200, cancelled.text
    jobs = {job["id"]: job for job in cancelled.json()["cells"][0]["jobs"]}
    assert jobs[done]["status"] == "succeeded" and not jobs[done]["cancel_requested"]
    assert jobs[running]["status"] == "running" and jobs[running]["cancel_requested"]  # stops at its next step
    assert all(jobs[job_id]["status"] == "cancelled" for job_id in queued)
    assert cancelled.json()["status"] == "running" and cancelled.json()["cells"][0]["mean"] == 0.3
    set_jobs([running], "cancelled")
    assert client.get(f"/v1/experiments/{body['id']}", headers=auth(alice.key)).json()["status"] == "cancelled"


def test_a_broker_outage_cancels_the_whole_experiment(client: TestClient, alice: OwnerKey, file_id: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import api.submission

    calls: list[str] = []

    def flaky(job_id: str, settings: object = None) -> None:
        calls.append(job_id)
        if len(calls) == 2:
            raise ConnectionError("broker down")

    monkeypatch.setattr(api.submission, "send_run_job", flaky)
    assert_error(post(client, alice.key, file_id, {"seeds": [0, 1, 2]}, idempotency_key="k"), 503, "queue_unavailable")
    with session_scope() as session:
        assert set(session.scalars(select(Job.status))) == {"cancelled"}
    monkeypatch.setattr(api.submission, "send_run_job", lambda job_id, settings=None: None)
    retry = post(client, alice.key, file_id, {"seeds": [0, 1, 2]}, idempotency_key="k")  # the key was released
    assert retry.status_code == 200 and retry.json()["status"] == "running" and job_count() == 6


def _columns(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_migration_0003_round_trips(client: TestClient, alice: OwnerKey, file_id: str,
                                    backend_settings: Settings) -> None:
    """Down to 0002 drops the table and the column and keeps the jobs and their events; up again restores them."""
    url = backend_settings.database_url
    post(client, alice.key, file_id, {"seeds": [0, 1]})
    job_id = client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).json()["data"][0]["id"]
    with session_scope() as session:
        session.execute(text("INSERT INTO job_events (job_id, created_at, level, stage, message) "
                             "VALUES (:job, CURRENT_TIMESTAMP, 'info', 'setup', 'hello')"), {"job": job_id})
    from store.db import dispose_engines

    dispose_engines()
    command.downgrade(alembic_config(url), "0002")
    try:
        assert "experiment_id" not in _columns(url, "jobs")
        engine = make_engine(url)
        try:
            assert "experiments" not in inspect(engine).get_table_names()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 2
                assert conn.execute(text("SELECT message FROM job_events")).scalars().all() == ["hello"]
        finally:
            engine.dispose()
    finally:
        upgrade(url)
    assert "experiment_id" in _columns(url, "jobs")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Experiment)) == 0
        assert session.scalar(select(func.count()).select_from(Job).where(Job.experiment_id.is_(None))) == 2
