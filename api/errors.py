"""The one error shape, `{"error": {"code", "message", "param"}}`, for every 4xx and 5xx.

Errors are raised as values where they are detected (`ApiError`, core's `XModalError`, FastAPI's
validation errors, Starlette's HTTP exceptions) and translated here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ConfigError, UserError, XModalError
from store.db import TRANSIENT_ERRORS

log = logging.getLogger("xmodal.api")

_REQUEST_PARTS = {"body", "query", "path", "header", "cookie"}


class ApiError(Exception):
    """An error the API answers with on purpose: HTTP status, stable code, message, offending field."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def not_found(kind: str, object_id: str, param: str | None = None) -> ApiError:
    """Missing and someone else's look the same: never confirm that another owner's id exists."""
    return ApiError(404, f"{kind}_not_found", f"no {kind} with id {object_id!r}", param)


def error_response(status: int, code: str, message: str, param: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _status_code_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def validation_param(loc: Sequence[Any]) -> str | None:
    """`("body", "method", "orca")` → `"method.orca"`: the field as the client wrote it."""
    parts = list(loc[1:] if loc and loc[0] in _REQUEST_PARTS else loc)
    return ".".join(str(part) for part in parts) or None


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.param, exc.headers)


async def _xmodal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, XModalError)
    if isinstance(exc, ConfigError):
        status = 422
    elif isinstance(exc, UserError):
        status = 400
    else:
        log.error("core error escaped to the API edge: %r", exc)
        status = 500
    return error_response(status, **exc.as_dict())  # type: ignore[arg-type]


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, _status_code_name(exc.status_code), message, None, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return error_response(422, "invalid_json", f"request body is not valid JSON: {first.get('msg')}")
    param = validation_param(first.get("loc", ()))
    code = "missing_parameter" if first.get("type") == "missing" else "invalid_parameter"
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(422, code, message, param)


DATABASE_RETRY_AFTER_S = 2


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or refused database connection (OperationalError also covers a locked SQLite file) is the
    service being briefly away, not a bug: 503 with Retry-After, so clients back off and retry.
    Other database errors stay 500s: they are bugs."""
    transient = isinstance(exc, TRANSIENT_ERRORS) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if not transient:
        return await _unhandled(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
    return error_response(503, "database_unavailable", "the database is unreachable; try again shortly",
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    """Every database connection of this process stayed busy for the pool timeout: the server is
    overloaded, which a client should back off from and retry, not a bug."""
    log.warning("no free database connection for %s %s", request.method, request.url.path)
    return error_response(503, "server_busy", "the server is busy; try again shortly",
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; it has been logged")


_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    ApiError: _api_error, XModalError: _xmodal_error, StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error, DBAPIError: _database_unavailable,
    DisconnectionError: _database_unavailable, PoolTimeout: _pool_exhausted, Exception: _unhandled,
}


def install_error_handlers(app: FastAPI) -> None:
    for kind, handler in _HANDLERS.items():
        app.add_exception_handler(kind, handler)


async def respond(request: Request, exc: Exception) -> JSONResponse:
    """The response the installed handlers give `exc`, for code that runs outside them (a middleware)."""
    handler = next(_HANDLERS[kind] for kind in type(exc).__mro__ if kind in _HANDLERS)
    return await handler(request, exc)
