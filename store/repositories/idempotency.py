"""Idempotency keys: which object a create request with a given key made, and for which request.

A key is per owner and endpoint and lives `ttl_seconds`; an expired key is deleted when next looked
up, so it never matches again and its row does not pile up.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from store.models import IdempotencyKey, utcnow


def fingerprint(request: Any) -> str:
    """sha256 of the request's canonical JSON: key order and spacing do not make two requests differ."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find(session: Session, owner_id: str, endpoint: str, key: str, ttl_seconds: float) -> IdempotencyKey | None:
    """The live record of `key`, or None; an expired one is deleted on the way."""
    record = session.get(IdempotencyKey, (owner_id, endpoint, key))
    if record is not None and record.created_at < utcnow() - timedelta(seconds=ttl_seconds):
        forget(session, owner_id, endpoint, key, created_at=record.created_at)
        return None
    return record


def forget(session: Session, owner_id: str, endpoint: str, key: str, created_at: datetime | None = None) -> None:
    """Drop a key; with `created_at`, only that record, so a fresher one a concurrent request wrote survives."""
    stmt = delete(IdempotencyKey).where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.endpoint == endpoint,
                                        IdempotencyKey.key == key)
    if created_at is not None:
        stmt = stmt.where(IdempotencyKey.created_at == created_at)
    session.execute(stmt)


def record(session: Session, *, owner_id: str, endpoint: str, key: str, fingerprint: str,
           resource_id: str) -> IdempotencyKey:
    """Remember what `key` made; raises IntegrityError (on flush) when a concurrent request got there first."""
    row = IdempotencyKey(owner_id=owner_id, endpoint=endpoint, key=key, fingerprint=fingerprint,
                         resource_id=resource_id)
    session.add(row)
    session.flush()
    return row

