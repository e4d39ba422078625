"""The FastAPI app factory: routers and error handlers, nothing else."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from api.deps import current_owner
from api.errors import install_error_handlers
from api.routes import files, health, jobs
from api.schemas.common import ERROR_RESPONSES


def create_app() -> FastAPI:
    app = FastAPI(
        title="xmodal",
        version="0.1.0",
        description="Cross-modal fine-tuning of pretrained transformers, shaped like the OpenAI fine-tuning API.",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (files.router, jobs.router):
        # Every /v1 route needs a key, even one that forgets to ask for the owner.
        app.include_router(router, prefix="/v1", dependencies=[Depends(current_owner)], responses=ERROR_RESPONSES)
    return app
