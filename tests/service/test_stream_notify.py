"""Live updates by notification (issue 14), against a real uvicorn server on PostgreSQL: open SSE
streams cost the database nothing while their jobs are quiet, however many are open (counted by
PostgreSQL itself, in pg_stat_database), a new event reaches every stream within a second and
costs one read per job however many streams follow it, and a listener whose connection is killed
comes back while its streams go on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from api.live import APPLICATION_NAME
from tests.service.api_fixtures import auth
from tests.service.conftest import POSTGRES_SERVER
from tests.service.test_streams import JOBS, Server, add_events, finish, serving, sse

pytestmark = pytest.mark.integration

FEW, MANY = 5, 60
STATS_SETTLE_S = 11.0
"""PostgreSQL publishes an idle backend's transaction counts up to 10 s late (PGSTAT_IDLE_INTERVAL):
the streams' opening reads must be counted before a quiet window starts."""
QUIET_WINDOW_S = 5.0
LATENCY_S = 1.0


@pytest.fixture(scope="module", params=["postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Streams uncapped; were they polling, every 50 ms (test_streams' servers) each would read."""
    with serving(request, tmp_path_factory, max_streams_per_key="0", max_streams="0") as running_server:
        yield running_server


@pytest.fixture(scope="module")
def admin() -> Iterator[Engine]:
    """A connection to the `postgres` database: reading the statistics adds nothing to the test's."""
    engine = create_engine(f"{POSTGRES_SERVER}/postgres")
    yield engine
    engine.dispose()


class Follower(threading.Thread):
    """One open events stream, read on its own thread: when each message arrived, and whether `end` came."""

    def __init__(self, server: Server, job_id: str) -> None:
        super().__init__(daemon=True)
        self.base_url, self.key, self.job_id = str(server.http.base_url), server.alice, job_id
        self.opened = threading.Event()
        self.arrived: dict[str, float] = {}
        self.ended = False
        self.status: int | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=30.0) as http, \
                    http.stream("GET", f"{JOBS}/{self.job_id}/events/stream", headers=auth(self.key)) as response:
                self.status = response.status_code
                self.opened.set()
                for item in sse(response):
                    if item["event"] == "event":
                        self.arrived[json.loads(item["data"])["message"]] = time.monotonic()
                    self.ended = self.ended or item["event"] == "end"
        except BaseException as exc:  # the test reports it
            self.failure = exc
        finally:
            self.opened.set()


def open_followers(server: Server, job_ids: list[str], count: int) -> list[Follower]:
    followers = [Follower(server, job_ids[index % len(job_ids)]) for index in range(count)]
    for follower in followers:
        follower.start()
    for follower in followers:
        assert follower.opened.wait(30.0) and follower.status == 200, (follower.status, follower.failure)
    return followers


def database_name(server_url: str) -> str:
    name = make_url(server_url).database
    assert name
    return name


def transactions(admin: Engine, database: str) -> int:
    """Transactions PostgreSQL has counted in `database` (each read of a stream is at least one)."""
    with admin.connect() as conn:
        return int(conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :name"),
                                {"name": database}).scalar_one())


def quiet_transactions(admin: Engine, database: str) -> int:
    time.sleep(STATS_SETTLE_S)
    before = transactions(admin, database)
    time.sleep(QUIET_WINDOW_S)
    return transactions(admin, database) - before


def arrival_delays(followers: list[Follower], message: str, sent_at: float, wait_s: float = 5.0) -> list[float]:
    """Each follower's delay for `message`, waiting up to `wait_s` for the slow ones (inf: never came)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(message in follower.arrived for follower in followers):
        time.sleep(0.01)
    return [follower.arrived.get(message, float("inf")) - sent_at for follower in followers]


def test_quiet_streams_cost_the_database_nothing_however_many_and_a_new_event_reaches_all_within_a_second(
        server: Server, admin: Engine, postgres_database_url: str) -> None:
    database = database_name(postgres_database_url)
    job_ids = [server.new_job(), server.new_job()]
    followers = open_followers(server, job_ids, FEW)
    few = quiet_transactions(admin, database)
    followers += open_followers(server, job_ids, MANY - FEW)
    many = quiet_transactions(admin, database)
    # Polling, each stream would read 20 times a second: thousands in the window with MANY open.
    assert many <= few + 5, f"{many} transactions in {QUIET_WINDOW_S} s with {MANY} streams, {few} with {FEW}"

    before = transactions(admin, database)
    for job_id in job_ids:
        add_events(job_id, f"news of {job_id}")
    sent_at = time.monotonic()
    delays = [delay for job_id in job_ids for delay in
              arrival_delays([f for f in followers if f.job_id == job_id], f"news of {job_id}", sent_at)]
    assert max(delays) < LATENCY_S, f"slowest of {len(delays)} streams: {max(delays):.2f} s"
    time.sleep(STATS_SETTLE_S)
    spent = transactions(admin, database) - before
    # Per job: the write and one read that its woken streams share, each 2 transactions with the
    # pools' pre-ping (13 measured); a read per stream would be 2 x MANY.
    assert spent < MANY / 2, f"{spent} transactions for {len(job_ids)} events to {MANY} streams"

    for job_id in job_ids:
        finish(job_id)  # a status change is notified too: every stream gets `end` and closes
    for follower in followers:
        follower.join(10.0)
    assert all(follower.ended and not follower.is_alive() for follower in followers)
    assert all(follower.failure is None for follower in followers), [f.failure for f in followers if f.failure]


def listener_pids(admin: Engine, database: str) -> list[int]:
    with admin.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND application_name = :app"),
                            {"name": database, "app": APPLICATION_NAME})
        return list(rows.scalars())


def test_a_killed_listener_connection_comes_back_and_its_streams_miss_nothing(
        server: Server, admin: Engine, postgres_database_url: str) -> None:
    database = database_name(postgres_database_url)
    job_id = server.new_job()
    [follower] = open_followers(server, [job_id], 1)
    [killed] = listener_pids(admin, database)  # one listener per API process
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}).scalar_one()
    add_events(job_id, "while nobody listened")  # its NOTIFY is lost: the stream must find it anyway
    sent_at = time.monotonic()
    assert arrival_delays([follower], "while nobody listened", sent_at) < [2.0]
    deadline = time.monotonic() + 10.0
    while (pids := listener_pids(admin, database)) in ([], [killed]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 1 and pids != [killed], f"the listener did not come back: {pids}"
    add_events(job_id, "after it came back")
    sent_at = time.monotonic()
    assert arrival_delays([follower], "after it came back", sent_at) < [LATENCY_S]
    finish(job_id)
    follower.join(10.0)
    assert follower.ended and follower.failure is None
