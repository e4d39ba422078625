"""Dashboard pages and their static files. The pages hold no data and no secrets: each is a
shell whose script module fetches what it shows from /v1 with the key the browser keeps."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.errors import ApiError

HERE = FilePath(__file__).resolve().parent
STATIC_ROOT = HERE / "static"
VENDOR_DIR = STATIC_ROOT / "vendor"
CHART_SCRIPT, CHART_STYLE = "uPlot.iife.min.js", "uPlot.min.css"
"""Copied from the npm package `uplot` by `make install` (see the Makefile); not committed."""

POLICY = {
    "default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data: blob:",
    "connect-src": "'self'", "object-src": "'none'", "base-uri": "'none'", "frame-ancestors": "'none'",
    "form-action": "'self'",
}
"""Same-origin scripts only: the bearer key in sessionStorage is readable by any script on the page."""


def content_security_policy(**directives: str) -> str:
    """The dashboard's policy, with `directives` (underscores for dashes) replacing its own."""
    merged = POLICY | {name.replace("_", "-"): value for name, value in directives.items()}
    return "; ".join(f"{name} {value}" for name, value in merged.items())


CONTENT_SECURITY_POLICY = content_security_policy()

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")

ObjectId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def chart_library_ready() -> bool:
    return (VENDOR_DIR / CHART_SCRIPT).is_file() and (VENDOR_DIR / CHART_STYLE).is_file()


def _page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, {
        "title": title, "chart_library": chart_library_ready(), "vendor_dir": "api/dashboard/static/vendor",
        **context,
    })
    return harden(response, CONTENT_SECURITY_POLICY)


def harden(response: HTMLResponse, policy: str) -> HTMLResponse:
    """The headers every HTML page of ours carries: its script policy, no caching, no referrer."""
    response.headers["Content-Security-Policy"] = policy
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", "Jobs", script="jobs.js")


@router.get("/dashboard", response_class=RedirectResponse)
def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/dashboard/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", "Log in", script="login.js")


@router.get("/dashboard/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: ObjectId) -> HTMLResponse:
    return _page(request, "job.html", f"Job {job_id}", script="job.js", job_id=job_id)


@router.get("/dashboard/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> HTMLResponse:
    return _page(request, "compare.html", "Compare jobs", script="compare.js")


@router.get("/dashboard/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(request: Request, experiment_id: ObjectId) -> HTMLResponse:
    return _page(request, "experiment.html", f"Experiment {experiment_id}", script="experiment.js",
                 experiment_id=experiment_id)


@router.get("/dashboard/static/{path:path}")
def static_file(path: str) -> Response:
    """A file under static/, never outside it (`..` and links are resolved first)."""
    file = (STATIC_ROOT / path).resolve()
    if not file.is_relative_to(STATIC_ROOT) or not file.is_file():
        raise ApiError(404, "not_found", f"no dashboard file {path!r}")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return FileResponse(file, media_type=MEDIA_TYPES.get(file.suffix), headers=headers)
