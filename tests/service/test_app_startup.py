"""What the app's start-up does to its process, beyond routes (api/main.py `lifespan`)."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from api.main import create_app
from store.settings import Settings


def test_startup_freezes_what_is_loaded_out_of_the_collectors_reach(settings: Settings) -> None:
    """Full collections must not walk the modules and the app again and again (a 200+ ms pause each
    under load); without `gc.freeze()` in the lifespan nothing is frozen here."""
    gc.unfreeze()
    try:
        with TestClient(create_app()) as client:
            assert gc.get_freeze_count() > 10_000  # the app, its routes and every imported module
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
