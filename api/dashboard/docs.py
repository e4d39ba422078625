"""`/docs`: Swagger UI served from our own origin under a strict Content-Security-Policy.

FastAPI's default page loads swagger-ui from a CDN with no integrity check and no policy, on the
origin whose sessionStorage holds the dashboard's key: whoever serves that script could read it.
Here the assets are vendored from npm (`make vendor`, the Dockerfile's build stage) and the
policy lets only our own files and FastAPI's one inline bootstrap script (by its hash) run.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.dashboard.routes import VENDOR_DIR, content_security_policy, harden
from api.errors import ApiError

SWAGGER_DIR = VENDOR_DIR / "swagger-ui"
SWAGGER_URL = "/dashboard/static/vendor/swagger-ui"
SWAGGER_SCRIPT, SWAGGER_STYLE = "swagger-ui-bundle.js", "swagger-ui.css"
"""Copied from the npm package `swagger-ui-dist` by `make vendor` (see the Makefile); not committed."""

INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def swagger_ui_ready() -> bool:
    return (SWAGGER_DIR / SWAGGER_SCRIPT).is_file() and (SWAGGER_DIR / SWAGGER_STYLE).is_file()


def script_hash(html: str) -> str:
    """The CSP source for the page's one inline script; a changed FastAPI template fails loudly here."""
    scripts = INLINE_SCRIPT.findall(html)
    if len(scripts) != 1:
        raise RuntimeError(f"expected one inline script in FastAPI's Swagger UI page, found {len(scripts)}")
    digest = hashlib.sha256(scripts[0].encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    if not swagger_ui_ready():
        raise ApiError(503, "docs_unavailable", "Swagger UI is not installed on this server: run `make vendor`, which "
                       f"copies swagger-ui-dist from npm into {SWAGGER_DIR}")
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} · API docs",
        swagger_js_url=f"{SWAGGER_URL}/{SWAGGER_SCRIPT}", swagger_css_url=f"{SWAGGER_URL}/{SWAGGER_STYLE}",
        swagger_favicon_url="data:,",
        swagger_ui_parameters={"validatorUrl": None},  # its badge would fetch validator.swagger.io
    )
    policy = content_security_policy(script_src=f"'self' {script_hash(page.body.decode())}")
    return harden(page, policy)
