"""Dependencies as named `Annotated` aliases, so a route's signature reads like a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import ApiError
from store.blobs import BlobStore
from store.db import SessionLocal, get_engine
from store.models import Owner
from store.repositories import keys
from store.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session() -> Iterator[Session]:
    """A session per request. Routes commit explicitly (before sending a queue message, say);
    anything left uncommitted is rolled back when the session closes."""
    with SessionLocal(bind=get_engine()) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `xmodal keys create` or `xmodal up`")


def current_owner(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Owner:
    """The owner of the request's bearer key; every /v1 route depends on it."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(401, "invalid_api_key", "missing API key; send 'Authorization: Bearer <key>'", headers=challenge)
    owner = keys.authenticate(session, credentials.credentials)
    if owner is None:
        raise ApiError(401, "invalid_api_key", "invalid or revoked API key", headers=challenge)
    return owner


CurrentOwner = Annotated[Owner, Depends(current_owner)]


def get_blobs(settings: SettingsDep) -> BlobStore:
    return BlobStore(settings.blob_root)


BlobsDep = Annotated[BlobStore, Depends(get_blobs)]


def page_limit(settings: SettingsDep, limit: Annotated[int, Query(ge=1, description="page size")] = 20) -> int:
    """`limit`, bounded by the deployment's `api_page_limit`."""
    if limit > settings.api_page_limit:
        raise ApiError(422, "invalid_parameter", f"limit: at most {settings.api_page_limit}", param="limit")
    return limit


LimitDep = Annotated[int, Depends(page_limit)]
