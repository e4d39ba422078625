"""The app as a whole: torch-free start, docs, health and readiness, the `serve`/`up` commands."""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api import commands
from store.settings import Settings, get_settings, reset_settings
from tests.service.api_fixtures import (
    REPO_ROOT,
    assert_error,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
)


def test_the_api_starts_without_torch_or_worker_code() -> None:
    code = ("import sys, api.main; app = api.main.create_app(); app.openapi(); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'worker', 'transformers', 'ot')); "
            "print(heavy); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout


def test_docs_and_openapi(client: TestClient) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()
    assert {"/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/content",
            "/healthz", "/readyz"} <= set(schema["paths"])
    create = schema["paths"]["/v1/fine_tuning/jobs"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "multipart/form-data" in schema["paths"]["/v1/files"]["post"]["requestBody"]["content"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.parametrize(("variable", "value", "param"), [
    ("XMODAL_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none", "database"),
    ("XMODAL_BROKER_URL", "redis://127.0.0.1:1/0", "broker"),
])
def test_readiness_fails_with_503_when_a_dependency_is_down(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                            variable: str, value: str, param: str) -> None:
    monkeypatch.setenv(variable, value)
    reset_settings()
    assert_error(client.get("/readyz"), 503, "not_ready", param)
    assert client.get("/healthz").status_code == 200


def test_readiness_with_redis(client: TestClient, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("XMODAL_BROKER_URL", redis_url)
    reset_settings()
    assert client.get("/readyz").json()["broker"] == "ok"


def test_commands_register_serve_and_up() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    serve = parser.parse_args(["serve", "--port", "9000"])
    assert (serve.host, serve.port, serve.func) == ("127.0.0.1", 9000, commands._serve)
    up = parser.parse_args(["up", "--host", "0.0.0.0"])
    assert (up.host, up.port, up.func) == ("0.0.0.0", 8000, commands._up)


def test_first_key_is_created_once_kept_private_and_shown_again(settings: Settings) -> None:
    from store.db import session_scope
    from store.repositories import keys

    key = commands.first_key(settings)
    assert key is not None and key.startswith("xm-")
    key_file = settings.data_dir / commands.FIRST_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert commands.first_key(settings) == key  # a restart shows the same key, creating no other
    with session_scope() as session:
        owner = keys.authenticate(session, key)
        assert owner is not None and owner.name == commands.LOCAL_OWNER
    key_file.unlink()
    assert commands.first_key(settings) is None  # the user deleted the file: nothing to re-print


def test_serve_migrates_a_fresh_database_before_starting(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: object) -> None:
    from sqlalchemy import inspect

    from store.db import dispose_engines, get_engine

    fresh = settings.data_dir / "fresh.db"
    monkeypatch.setenv("XMODAL_DATABASE_URL", f"sqlite:///{fresh}")
    reset_settings()
    dispose_engines()
    started: list[tuple[str, int, int]] = []
    monkeypatch.setattr(commands, "_run_api", lambda host, port, workers: started.append((host, port, workers)))
    assert commands._serve(argparse.Namespace(host="127.0.0.1", port=8123, workers=2)) == 0
    assert started == [("127.0.0.1", 8123, 2)]
    assert "jobs" in inspect(get_engine(get_settings().database_url)).get_table_names()
