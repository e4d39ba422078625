"""`/healthz`: the process answers. `/readyz`: it can reach its database and its broker."""

from __future__ import annotations

from fastapi import APIRouter
from kombu import Connection
from sqlalchemy import text

from api.deps import SettingsDep
from api.errors import ApiError
from store.db import get_engine
from store.queue import broker_config
from store.settings import Settings

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_S = 3.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(settings: Settings) -> None:
    with get_engine(settings.database_url).connect() as connection:
        connection.execute(text("SELECT 1"))


def _check_broker(settings: Settings) -> None:
    config = broker_config(settings)
    with Connection(config["broker_url"], transport_options=config["broker_transport_options"],
                    connect_timeout=BROKER_TIMEOUT_S) as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)


@router.get("/readyz", responses={503: {"description": "database or broker unreachable"}})
def readyz(settings: SettingsDep) -> dict[str, str]:
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            check(settings)
        except Exception as exc:
            raise ApiError(503, "not_ready", f"{name} unreachable: {type(exc).__name__}: {exc}", name) from None
    return {"status": "ok", "database": "ok", "broker": "ok"}
