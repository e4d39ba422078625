"""`Idempotency-Key` for create routes: a retry returns what the first request made.

The record and the object it names are committed together, so a key never names something that
was not made. Two concurrent requests with one key both create, but only one record insert
wins; the loser rolls back its object and answers with the winner's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from store.models import Experiment, File, Job
from store.repositories import idempotency

Made = TypeVar("Made", File, Job, Experiment)


@dataclass(frozen=True)
class Once:
    """One create request under an idempotency key."""

    owner_id: str
    endpoint: str
    key: str
    fingerprint: str  # idempotency.fingerprint() of the request
    ttl_seconds: float


def create_once(session: Session, once: Once | None, create: Callable[[], Made],
                load: Callable[[str], Made | None]) -> tuple[Made, bool]:
    """`create()` and commit, unless `once.key` already made something for this request.

    Returns the object and whether this call created it. `load(id)` fetches an earlier object as
    its owner sees it; a key whose object is gone (a deleted file) is forgotten and the request
    runs afresh. The same key with another request is a 422.
    """
    if once is None:
        made = create()
        session.commit()
        return made, True
    if (earlier := _replay(session, once, load)) is not None:
        return earlier, False
    made = create()
    try:
        idempotency.record(session, owner_id=once.owner_id, endpoint=once.endpoint, key=once.key,
                           fingerprint=once.fingerprint, resource_id=made.id)
        session.commit()
    except IntegrityError:
        session.rollback()  # a concurrent request with this key committed first: take its object
        if (earlier := _replay(session, once, load)) is None:
            raise
        return earlier, False
    return made, True


def _replay(session: Session, once: Once, load: Callable[[str], Made | None]) -> Made | None:
    record = idempotency.find(session, once.owner_id, once.endpoint, once.key, once.ttl_seconds)
    if record is None:
        return None
    if record.fingerprint != once.fingerprint:
        raise ApiError(422, "idempotency_key_reused", f"Idempotency-Key {once.key!r} was already used with a "
                       "different request; use a new key for a new request", "Idempotency-Key")
    earlier = load(record.resource_id)
    if earlier is None:
        idempotency.forget(session, once.owner_id, once.endpoint, once.key, created_at=record.created_at)
    return earlier
