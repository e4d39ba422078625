"""The API process's cache of checked keys (store.repositories.keys.OwnerCache): a hit costs no
query; a revoke in this process is refused at once; a revoke this process did not see (another
process's `xmodal keys revoke`, here an UPDATE behind its back) is refused once the TTL passes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from api.main import create_app
from store.db import get_engine, session_scope
from store.models import ApiKey, Owner
from store.repositories import keys
from store.settings import Settings
from tests.service.api_fixtures import assert_error, auth, limits_fixture  # noqa: F401 (fixtures)
from tests.service.conftest import OwnerKey, make_owner_key


@pytest.fixture
def client(backend_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def alice(backend_settings: Settings) -> OwnerKey:
    return make_owner_key("alice")


@pytest.fixture
def key_queries(backend_settings: Settings) -> Iterator[list[str]]:
    """The SQL statements that read api_keys, as they run."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_keys" in statement:
            seen.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_checked_key_is_not_looked_up_again_within_the_ttl(client: TestClient, alice: OwnerKey,
                                                             key_queries: list[str]) -> None:
    for _ in range(3):
        assert client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).status_code == 200
    assert len(key_queries) == 1


def test_a_zero_ttl_checks_the_key_on_every_request(client: TestClient, alice: OwnerKey, key_queries: list[str],
                                                    limits: Any) -> None:
    limits(api_key_cache_seconds=0)
    for _ in range(3):
        assert client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).status_code == 200
    assert len(key_queries) == 3


def test_a_key_revoked_in_this_process_is_refused_at_once(client: TestClient, alice: OwnerKey) -> None:
    assert client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).status_code == 200  # now cached
    with session_scope() as session:
        keys.revoke(session, alice.key[:keys.DISPLAY_PREFIX_CHARS])
    assert_error(client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)), 401, "invalid_api_key")
    # a POST is authenticated by the guard middleware (api/guard.py), through the same cache
    assert_error(client.post("/v1/fine_tuning/jobs", headers=auth(alice.key), json={}), 401, "invalid_api_key")


def test_a_revoke_this_process_did_not_see_is_refused_once_the_ttl_passes(
        client: TestClient, alice: OwnerKey, limits: Any) -> None:
    limits(api_key_cache_seconds=1)
    assert client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).status_code == 200
    with session_scope() as session:  # as another process's `xmodal keys revoke` would: this cache not told
        session.execute(update(ApiKey).where(ApiKey.key_hash == keys.hash_key(alice.key))
                        .values(revoked_at=ApiKey.created_at))
    assert client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)).status_code == 200  # the documented delay
    time.sleep(1.1)
    assert_error(client.get("/v1/fine_tuning/jobs", headers=auth(alice.key)), 401, "invalid_api_key")


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = keys.OwnerCache(max_entries=2)
    for name in ("a", "b"):
        cache.put(name, Owner(id=f"own-{name}", name=name))
    assert cache.get("a", 60) is not None  # a is now more recent than b
    cache.put("c", Owner(id="own-c", name="c"))
    assert cache.get("b", 60) is None
    assert [cache.get(name, 60).id for name in ("a", "c")] == ["own-a", "own-c"]  # type: ignore[union-attr]
