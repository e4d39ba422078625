"""Another owner's refused upload cannot delete your data (issue 12, finding 4).

Blobs are shared by content. While A's upload was being validated, B sent the same bytes with a bad
`purpose`; B's refusal deleted the blob, A's file was recorded anyway, and A's download and job
failed. Now an upload reserves its blob before renaming it into place, and a refused upload deletes
a blob only when no file or checkpoint row and no live reservation holds it, on each backend.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import uvicorn
from alembic import command
from sqlalchemy import func, inspect, select

import api.routes.files as files_route
from api.main import create_app
from migrations import alembic_config, upgrade
from store.blobs import BlobStore
from store.db import make_engine, session_scope
from store.models import BlobReservation
from store.repositories import blob_reservations
from store.settings import Settings
from tests.service.api_fixtures import assert_error, auth, free_port, npz_bytes, upload
from tests.service.conftest import make_owner_key

pytestmark = pytest.mark.integration
SHA = "ab" * 32


@contextmanager
def server_in_thread() -> Iterator[str]:
    """A real uvicorn server, on a thread of the test's own process so that the test's hook can
    hold one request at a chosen point (a server in another process would not see it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def reservations() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(BlobReservation)) or 0)


def test_a_refused_duplicate_leaves_an_upload_in_flight_its_blob(backend_settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A is held in validation (a hook) while B's same bytes are refused; A's file is then recorded
    and downloads whole. Without the reservation B's refusal deleted the blob: A's download was a 500."""
    alice, bob = make_owner_key("alice"), make_owner_key("bob")
    blobs = BlobStore(backend_settings.blob_root)
    content = npz_bytes(n=200, length=64)
    sha256 = hashlib.sha256(content).hexdigest()
    validating, go_on = threading.Event(), threading.Event()
    validate = files_route.validate_npz

    def held(*args: object, **kwargs: object) -> object:
        validating.set()
        assert go_on.wait(60), "the test never let the upload go on"
        return validate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files_route, "validate_npz", held)
    with (server_in_thread() as url, httpx.Client(base_url=url, timeout=60) as http_a,
          httpx.Client(base_url=url, timeout=60) as http_b, ThreadPoolExecutor(1) as pool):
        first = pool.submit(upload, http_a, alice.key, content)
        try:
            assert validating.wait(30), "A's upload never reached validation"
            assert reservations() == 1 and blobs.exists(sha256)
            assert_error(upload(http_b, bob.key, content, purpose="bogus"), 422, "invalid_parameter", "purpose")
            assert blobs.exists(sha256), "B's refused duplicate deleted the blob A's upload is still recording"
        finally:
            go_on.set()
        created = first.result(60)
        assert created.status_code == 200 and created.json()["status"] == "processed", created.text
        download = http_a.get(f"/v1/files/{created.json()['id']}/content", headers=auth(alice.key))
        assert download.status_code == 200 and download.content == content
        assert reservations() == 0  # released once the file row held the blob

        # Nothing holds a refused upload's bytes: its blob still goes, and so does its reservation.
        other = npz_bytes(seed=7)
        assert_error(upload(http_b, bob.key, other, purpose="bogus"), 422, "invalid_parameter", "purpose")
        assert not blobs.exists(hashlib.sha256(other).hexdigest())
        assert reservations() == 0


def test_a_reservation_being_written_makes_a_discard_wait_and_see_it(backend_settings: Settings) -> None:
    """The check-then-delete of a refused upload takes turns with a reservation of the same blob:
    while one is uncommitted, the other's `lock` waits, then sees it. (PostgreSQL: the advisory
    lock; SQLite: the write lock `lock` takes by purging.)"""
    with session_scope() as writing:
        blob_reservations.reserve(writing, SHA)
        with ThreadPoolExecutor(1) as pool:
            def discard_check() -> bool:
                with session_scope() as session:
                    blob_reservations.lock(session, SHA)
                    return blob_reservations.in_use(session, SHA)

            checked = pool.submit(discard_check)
            time.sleep(1.0)
            assert not checked.done(), "the check ran while a reservation of the blob was being written"
            writing.commit()
            assert checked.result(30) is True


def test_an_expired_reservation_holds_nothing_and_is_purged(backend_settings: Settings) -> None:
    """A reservation its process left behind (killed mid-upload) stops holding the blob."""
    with session_scope() as session:
        blob_reservations.reserve(session, SHA, ttl=timedelta(seconds=-1))
        live = blob_reservations.reserve(session, "cd" * 32)
    with session_scope() as session:
        assert not blob_reservations.in_use(session, SHA)
        blob_reservations.lock(session, SHA)
    with session_scope() as session:
        assert session.scalars(select(BlobReservation.id)).all() == [live]


def test_migration_0004_adds_and_drops_the_table(backend_settings: Settings) -> None:
    url = backend_settings.database_url

    def tables() -> set[str]:
        engine = make_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    assert "blob_reservations" in tables()
    command.downgrade(alembic_config(url), "0003")
    try:
        assert "blob_reservations" not in tables() and "files" in tables()
    finally:
        upgrade(url)
    assert "blob_reservations" in tables()
