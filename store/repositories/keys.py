"""API keys: `xm-` + 40 random characters, shown once; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from store.models import ApiKey, Owner, utcnow

KEY_PREFIX = "xm-"
DISPLAY_PREFIX_CHARS = 12


class KeyNotFound(LookupError):
    """No key, or more than one, matches what was given to revoke."""


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def get_or_create_owner(session: Session, name: str) -> Owner:
    owner = session.scalar(select(Owner).where(Owner.name == name))
    if owner is None:
        owner = Owner(name=name)
        session.add(owner)
        session.flush()
    return owner


def create_key(session: Session, owner_name: str) -> str:
    """Create a key for `owner_name` (creating the owner if new) and return its plaintext, once."""
    owner = get_or_create_owner(session, owner_name)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(30)
    session.add(ApiKey(owner_id=owner.id, key_hash=hash_key(plaintext), prefix=plaintext[:DISPLAY_PREFIX_CHARS]))
    session.flush()
    return plaintext


def authenticate(session: Session, plaintext: str) -> Owner | None:
    """The owner of an unrevoked key, or None."""
    return session.scalar(
        select(Owner).join(ApiKey, ApiKey.owner_id == Owner.id)
        .where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None))
    )


def revoke(session: Session, id_or_prefix: str) -> ApiKey:
    """Revoke the one key whose id or display prefix is `id_or_prefix` (idempotent)."""
    matches = list(session.scalars(
        select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
    ))
    if len(matches) != 1:
        problem = "no key matches" if not matches else f"{len(matches)} keys match"
        raise KeyNotFound(f"{problem} {id_or_prefix!r}; give the key id (key-…)")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key
