"""What the API process tells its operators: Prometheus metrics (requests by route template and
status, their latency, the open event streams; `/metrics` in api.routes.metrics serves them with
the fleet gauges) and the job id on the log records of a request about a job (store.logs).

Under `xmodal serve` every API process writes these series to files in one directory
(prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`, fresh per server start), and
`/metrics` from any process sums them: `--workers N` shows one set of counters. Run without it
(`uvicorn api.main:create_app` by hand, tests) a process reports its own.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import Request
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.logs import current_job_id

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter("xmodal_http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram("xmodal_http_request_duration_seconds",
                    "Time from request to response headers (a stream's or download's length is the client's)",
                    ["method", "route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
OPEN_STREAMS = Gauge("xmodal_sse_streams_open", "Server-sent event streams being served",
                     multiprocess_mode="livesum")  # the live processes' streams, summed


def route_template(scope: MutableMapping[str, Any]) -> str:
    """`/v1/fine_tuning/jobs/{job_id}`, not the raw path: label values stay a small fixed set, or
    anyone could grow `/metrics` without bound by requesting junk paths (every unmatched path
    shares `unmatched`).

    A matched route knows its path inside its router, not the prefixes it was included under;
    those are the request path's leading segments, as many as the route's own path leaves over.
    A `{name:path}` value spans segments of its own, so its slashes count towards the route's.
    """
    template = getattr(scope.get("route"), "path", None)
    if not template:
        return "unmatched"
    segments = scope["path"].split("/")
    spanned = template.count("/") + sum(str(value).count("/") for value in scope.get("path_params", {}).values())
    return "/".join(segments[:len(segments) - spanned]) + template


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, answered = 500, None  # an exception escaping the app becomes a 500 outside this middleware

        async def observe(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            route = route_template(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe((answered or time.perf_counter()) - start)


def bind_job_id(request: Request) -> None:
    """Tag the request's log records with the job id in its path. Called from an async dependency
    (api.deps.authorized_owner) on purpose: that runs in the request's own task, whose context the
    route's thread and the error handlers inherit; the task, and the tag with it, ends with the request."""
    job_id = request.path_params.get("job_id")
    if job_id is not None:
        current_job_id.set(job_id)
