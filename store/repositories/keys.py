"""API keys: `xm-` + 40 random characters, shown once; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, make_transient_to_detached

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


class OwnerCache:
    """Owners of recently checked keys, by key hash, for at most `seconds`; the least recently used
    entry goes once `max_entries` are held. Only good keys are kept: a flood of made-up keys cannot
    push real ones out. Revoking in this process drops the entry at once; another process trusts
    its entry until it expires, so the TTL is the revocation delay across processes."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Owner]] = OrderedDict()
        self._lock = threading.Lock()  # the event loop and thread-pool threads both read it

    def get(self, key_hash: str, seconds: float) -> Owner | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            if now - entry[0] >= seconds:
                del self._entries[key_hash]
                return None
            self._entries.move_to_end(key_hash)
            return entry[1]

    def put(self, key_hash: str, owner: Owner) -> None:
        """Keep a detached copy: the caller's instance belongs to its session."""
        copy = Owner(id=owner.id, name=owner.name, created_at=owner.created_at)
        make_transient_to_detached(copy)
        with self._lock:
            self._entries[key_hash] = (time.monotonic(), copy)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, key_hash: str) -> None:
        with self._lock:
            self._entries.pop(key_hash, None)


OWNERS = OwnerCache()
"""This process's cache (the API's authentication reads it; `revoke` drops from it)."""


def cached_owner(plaintext: str, seconds: float) -> Owner | None:
    """The owner this process saw for the key within `seconds`, or None (look it up)."""
    return OWNERS.get(hash_key(plaintext), seconds) if seconds > 0 else None


def authenticate_and_cache(session: Session, plaintext: str, seconds: float) -> Owner | None:
    """`authenticate`, remembering a good key's owner for `cached_owner` (when `seconds` > 0)."""
    owner = authenticate(session, plaintext)
    if owner is not None and seconds > 0:
        OWNERS.put(hash_key(plaintext), owner)
    return owner


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
    OWNERS.drop(key.key_hash)
    return key
