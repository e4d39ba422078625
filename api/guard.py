"""Authenticate before reading a body, and never buffer a large one.

FastAPI reads and parses a route's body before it resolves the route's dependencies, so with
`current_owner` alone a request with no key had its JSON parsed (a 422 for bad JSON, not a 401)
and a 500 MB body buffered before it was refused. This middleware runs first for every /v1
request that may carry a body: it checks the key (401 before a byte of the body is read), then
reads a JSON body itself, on the event loop, with the body read timeout and up to
`max_json_bytes` (413 from Content-Length up front, or as soon as a chunked body passes it), and
hands the app the bytes it read. Upload routes read their own bodies with their own limits
(api/uploads.py).
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bodies import BodyReader
from api.deps import bearer, missing_key, owner_of_key
from api.errors import ApiError, respond
from store.models import Owner
from store.settings import Settings, get_settings

BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STREAMED_BODIES = frozenset({("POST", "/v1/files")})
"""Routes that read their own body, with their own limits and timeout (api/uploads.py)."""


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the request body is larger than {limit} bytes")


class AuthenticateBeforeBody:
    """ASGI middleware: key first, then a bounded body (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS_METHODS or not _is_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            scope.setdefault("state", {})["owner"] = await _authenticate(request)
            if (scope["method"], scope["path"]) not in STREAMED_BODIES:
                receive = await _buffered(request, get_settings())
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:  # answered as the app's handlers would, the body left unread
            response = await respond(request, exc)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_api(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


async def _authenticate(request: Request) -> Owner:
    credentials = await bearer(request)
    if credentials is None:  # refused without touching the database
        raise missing_key()
    return await owner_of_key(credentials)


async def _buffered(request: Request, settings: Settings) -> Receive:
    """Read the whole body (at most `max_json_bytes`) and return a `receive` that replays it."""
    limit = settings.max_json_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = await BodyReader(request.receive, settings.body_read_timeout_seconds,
                            settings.body_min_bytes_per_second).read(limit + 1)
    if len(body) > limit:
        raise too_large(limit)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await request.receive()  # after the body: the client's disconnect
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
