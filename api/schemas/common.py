"""Shapes every resource shares: the error body, list pages, timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    """What every 4xx and 5xx response carries."""

    error: ErrorDetail


T = TypeVar("T", bound=BaseModel)


class ListResponse(BaseModel, Generic[T]):
    """One page; ask again with `after=last_id` while `has_more` is true."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | int | None = None
    last_id: str | int | None = None

    @classmethod
    def of(cls, data: Sequence[T], has_more: bool) -> ListResponse[T]:
        ids = [item.id for item in data]  # type: ignore[attr-defined]
        return cls(data=list(data), has_more=has_more, first_id=ids[0] if ids else None,
                   last_id=ids[-1] if ids else None)


def unix(moment: datetime) -> int:
    """OpenAI-style timestamps: whole unix seconds."""
    return int(moment.timestamp())


def unix_or_none(moment: datetime | None) -> int | None:
    return unix(moment) if moment is not None else None


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Bad request", 401: "Missing, invalid or revoked API key", 404: "Not found (or not yours)",
        422: "Invalid parameter", 500: "Internal error",
    }.items()
}
"""Documented on every /v1 route so the OpenAPI schema shows the error body."""
