"""docker-compose.yml wiring: the services exist, share settings (and no disk), start in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from store.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_services_and_commands(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "minio", "buckets", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["xmodal", "db", "upgrade"]
    assert services["api"]["command"][:2] == ["xmodal", "serve"]
    assert services["worker"]["command"][:2] == ["xmodal", "worker"]


def test_api_and_worker_share_settings_and_no_disk(services: dict[str, Any]) -> None:
    """Scale-out: processes meet only at PostgreSQL, Redis and MinIO, never on a shared volume."""
    api, worker, migrate = services["api"], services["worker"], services["migrate"]
    assert api["environment"] == worker["environment"] == migrate["environment"]
    env = api["environment"]
    settings = Settings(**{k.removeprefix("XMODAL_").lower(): v for k, v in env.items()  # parses as real settings
                           if k.startswith("XMODAL_")})
    assert "volumes" not in api and "volumes" not in worker
    minio = services["minio"]["environment"]
    assert settings.blob_url.startswith("s3://") and settings.s3_endpoint_url == "http://minio:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"],
                                                                        minio["MINIO_ROOT_PASSWORD"])
    bucket = settings.blob_url.removeprefix("s3://").split("/")[0]
    assert f"mb --ignore-existing store/{bucket}" in " ".join(services["buckets"]["entrypoint"])
    url = make_url(settings.database_url)
    pg = services["postgres"]["environment"]
    assert (url.host, url.username, url.password, url.database) == ("postgres", pg["POSTGRES_USER"],
                                                                    pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert settings.broker_url.startswith("redis://redis:")


def test_start_order_and_health(services: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == depends["buckets"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["buckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("postgres", "redis", "minio", "worker"):
        assert services[name]["healthcheck"]["test"]


def test_worker_reserves_a_gpu(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "resources" not in services["api"]["deploy"]


def test_two_api_replicas_and_two_workers(services: dict[str, Any]) -> None:
    assert services["api"]["deploy"]["replicas"] == services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["ports"] == ["8000-8001:8000"]  # a host port per replica
