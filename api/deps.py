"""Dependencies as named `Annotated` aliases, so a route's signature reads like a sentence.

The cheap ones are `async def`: FastAPI runs a sync dependency on the thread pool, and under load
each such hop queued behind every other request's (bench/results/profile_job_get.md). Only work
that blocks (a query, closing a session that holds a connection) goes to a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.observability import bind_job_id
from store.blobs import Blobs, blob_store
from store.db import SessionLocal, get_engine, get_reader
from store.models import Owner
from store.repositories import keys
from store.settings import Settings, get_settings


async def current_settings() -> Settings:
    """`get_settings()` (a cached object), without a thread-pool hop."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]


def reject_control_characters(request: Request) -> None:
    """Ids and query values are printable text; a NUL would otherwise reach PostgreSQL (which
    refuses it in text columns) and come back as a 500 instead of the client's mistake."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if any(ord(char) < 0x20 for char in str(value)):
            raise ApiError(422, "invalid_parameter", f"{name}: control characters are not allowed", name)


async def get_session() -> AsyncIterator[Session]:
    """A session per request. Routes commit explicitly (before sending a queue message, say);
    anything left uncommitted is rolled back when the session closes. Opening one does no I/O;
    closing one that still holds a connection rolls back (a round trip), so that runs on a thread."""
    session = SessionLocal(bind=get_engine())
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]

T = TypeVar("T")


async def read_only(work: Callable[[Session], T]) -> T:
    """`work(session)` in one thread-pool hop, on a session of its own that reads in autocommit (no
    BEGIN, no ROLLBACK) and is closed on that thread. A sync route on `SessionDep` takes up to three
    hops (the route, FastAPI's validation of its return value, closing a session that holds a
    connection), each queued behind every other request's: the polled read routes use this instead
    (bench/results/profile_job_get.md). Each statement reads the latest commit, as under PostgreSQL's
    default READ COMMITTED."""

    def run() -> T:
        with SessionLocal(bind=get_reader()) as session:
            return work(session)

    return await run_in_threadpool(run)


bearer = HTTPBearer(auto_error=False, description="an API key from `xmodal keys create` or `xmodal up`")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authorized_owner(request: Request, credentials: Credentials) -> Owner:
    """Every /v1 request's gate, in order: tag its logs with the job id, refuse control characters,
    find the key's owner, spend one of the key's requests. One dependency rather than four: FastAPI's
    resolution of each cost more than the check itself (bench/results/profile_job_get.md). As a route
    parameter (`CurrentOwner`) it is the same dependency, so it runs once per request. The owner is
    detached from any session: routes read its `id`."""
    bind_job_id(request)
    reject_control_characters(request)
    owner = await current_owner(request, credentials)
    rate_limit(request, get_settings(), credentials)
    return owner


async def current_owner(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Owner:
    """The owner of the request's bearer key. A request that may carry a body was authenticated
    before it was read (api/guard.py), the same way."""
    known: Owner | None = getattr(request.state, "owner", None)
    if known is not None:
        return known
    return await owner_of_key(credentials)


async def owner_of_key(credentials: HTTPAuthorizationCredentials | None) -> Owner:
    """The owner of an unrevoked bearer key; ApiError 401 for a missing, unknown or revoked one.

    A key this process checked within `api_key_cache_seconds` costs neither a query nor a thread
    (store.repositories.keys.OwnerCache); a revoke in this process drops it at once, one in another
    process (`xmodal keys revoke`) reaches this one within that TTL. The lookup has a session of its
    own, closed before the route runs: a request holding a connection while it waits for a thread
    deadlocked the API once threads + connections requests were in flight (bench/load.py).
    """
    if credentials is None:
        raise missing_key()
    seconds = get_settings().api_key_cache_seconds
    owner = keys.cached_owner(credentials.credentials, seconds)
    if owner is None:
        owner = await run_in_threadpool(_look_up, credentials.credentials, seconds)
    if owner is None:
        raise ApiError(401, "invalid_api_key", "invalid or revoked API key", headers=_CHALLENGE)
    return owner


def _look_up(plaintext: str, seconds: float) -> Owner | None:
    with SessionLocal(bind=get_engine()) as session:
        return keys.authenticate_and_cache(session, plaintext, seconds)


def missing_key() -> ApiError:
    return ApiError(401, "invalid_api_key", "missing API key; send 'Authorization: Bearer <key>'", headers=_CHALLENGE)


CurrentOwner = Annotated[Owner, Depends(authorized_owner)]


def rate_limit(request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Spend one of the key's requests (`rate_limit_per_minute`, per API process). Called after
    authentication, so only real keys get a bucket."""
    per_minute = settings.rate_limit_per_minute
    if per_minute == 0:
        return
    assert credentials is not None  # current_owner refused the request otherwise
    wait = request.app.state.rate_limiter.take(keys.hash_key(credentials.credentials), per_minute)
    if wait is not None:
        raise ApiError(429, "rate_limited", f"more than {per_minute} requests a minute with this API key; "
                       f"retry in {wait} s", headers={"Retry-After": str(wait)})


IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                   description="a retry with the same key and request returns the "
                                                               "first response's object (kept 24 h by default)")]


async def get_blobs(settings: SettingsDep) -> Blobs:
    return blob_store(settings)


BlobsDep = Annotated[Blobs, Depends(get_blobs)]


async def page_limit(settings: SettingsDep, limit: Annotated[int, Query(ge=1, description="page size")] = 20) -> int:
    """`limit`, bounded by the deployment's `api_page_limit`."""
    if limit > settings.api_page_limit:
        raise ApiError(422, "invalid_parameter", f"limit: at most {settings.api_page_limit}", param="limit")
    return limit


LimitDep = Annotated[int, Depends(page_limit)]
