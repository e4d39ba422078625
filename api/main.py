"""The FastAPI app factory: routers and error handlers, nothing else."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import dashboard
from api.deps import authorized_owner
from api.errors import install_error_handlers
from api.guard import AuthenticateBeforeBody
from api.live import Listener
from api.observability import RequestMetrics
from api.ratelimit import RateLimiter
from api.routes import experiments, files, health, jobs, metrics
from api.schemas.common import ERROR_RESPONSES
from api.slots import Slots
from api.streams import STREAM_RETRY_AFTER_S
from store.settings import get_settings

UPLOAD_RETRY_AFTER_S = 5
"""A hint only: how long an upload takes depends on its size and its client."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """This process's one LISTEN connection (api.live) lives as long as the app serves.

    What is loaded by now (modules, the app, its routes: ~170,000 objects) lives as long as the
    process, so it is frozen out of the garbage collector's reach: otherwise every full collection
    walks it all again, a pause of 200-260 ms per API process every few seconds under bench/load.py,
    which set its p99 (bench/results/profile_job_get.md, fifth step)."""
    listener: Listener = app.state.stream_listener
    listener.start(get_settings().database_url)
    gc.freeze()
    try:
        yield
    finally:
        await listener.stop()


def create_app() -> FastAPI:
    app = FastAPI(
        title="xmodal",
        version="0.1.0",
        description="Cross-modal fine-tuning of pretrained transformers, shaped like the OpenAI fine-tuning API.",
        docs_url=None, redoc_url=None,  # FastAPI's pages load scripts from a CDN; ours is dashboard.docs_router
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(AuthenticateBeforeBody)  # inside RequestMetrics, so its 401s and 413s are counted
    app.add_middleware(RequestMetrics)
    app.state.rate_limiter = RateLimiter()
    app.state.upload_slots = Slots("uploads", "too_many_uploads", retry_after_s=UPLOAD_RETRY_AFTER_S)
    app.state.stream_slots = Slots("streams", "too_many_streams", retry_after_s=STREAM_RETRY_AFTER_S)
    app.state.stream_listener = Listener()  # streams poll until lifespan starts it (on PostgreSQL)
    app.include_router(health.router)
    app.include_router(metrics.router)  # Prometheus; no key, like /healthz
    app.include_router(dashboard.router)  # HTML pages at / and /dashboard/…; they call /v1 from the browser
    app.include_router(dashboard.docs_router)  # /docs: Swagger UI from our own origin
    for router in (files.router, jobs.router, experiments.router):
        # Every /v1 route needs a key, even one that forgets to ask for the owner, and spends its rate.
        app.include_router(router, prefix="/v1", dependencies=[Depends(authorized_owner)],
                           responses=ERROR_RESPONSES)
    return app
