"""The dashboard: server-rendered HTML shells at `/` and `/dashboard/…`, filled in by small
vanilla-JS modules that call the /v1 JSON API with the user's bearer key.

Auth: the login page checks the key against `GET /v1/fine_tuning/jobs` and keeps it in the tab's
`sessionStorage`; every request sends it as `Authorization: Bearer`. Chosen over an HttpOnly
cookie because the /v1 API then stays bearer-only: a cookie the API accepted would make every
state-changing route (create, cancel, upload) reachable by cross-site requests, so it would need
CSRF tokens, and the stream routes would need a cookie path of their own. The key never appears
in HTML, URLs or server logs and is gone when the tab closes (a tab opened afresh asks for it again). What a page could leak it to is
script, so the pages carry a strict Content-Security-Policy (same-origin scripts only, the chart
library vendored, not fetched from a CDN) and render API data with `textContent` only.

Live curves: `EventSource` cannot send an Authorization header, so the pages read the
server-sent-event routes with `fetch()` and a stream reader, resuming with `Last-Event-ID`; where
the OpenAPI document has no stream route they poll the list routes with `after=`.

The chart library (uPlot) is vendored from npm by `make install` into `static/vendor/`, which is
not committed; without it the pages say so and show tables only. Swagger UI for `/docs` is
vendored beside it (`static/vendor/swagger-ui/`, see `docs.py`), and the pages open `/docs` in a
tab of its own with `rel=noopener`: such a tab starts with an empty sessionStorage, so nothing on
it can read the key.
"""

from api.dashboard.docs import router as docs_router
from api.dashboard.routes import router

__all__ = ["docs_router", "router"]
