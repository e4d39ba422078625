"""What one job GET's database work costs on each candidate path, side by side in one run.

    .venv/bin/python bench/get_paths.py [--calls 1000] [--rounds 3] [--out api_get_paths.md]

Issue 14 asks whether the request path should move to async SQLAlchemy; this measures it instead of
assuming it. A fresh migrated PostgreSQL database holds a few thousand queued jobs (as bench/api.py
leaves behind) and one cancelled job; each path reads one job and builds its JobObject, `--calls`
times in a row from one event loop, the way the API does:

- `orm session, 3 statements`: the route before this change: an ORM Session, `jobs.get` and
  `jobs.queue_slots` (row, position, pace) in a transaction, on the thread pool.
- `reader, 1-2 statements`: `jobs.get_with_slot` on `store.db.get_reader()` (autocommit, a Core
  row and its position in one statement, the pace only for a queued job), on the thread pool: the
  route now.
- `async psycopg` / `async asyncpg`: the same `get_with_slot` through SQLAlchemy's asyncio engine
  (`AsyncConnection.run_sync`, autocommit), awaited on the loop with no thread; asyncpg only when it
  is installed (it is not a dependency).

Rounds interleave the paths; the table gives each path's median over rounds of CPU and wall ms per
GET in this process (PostgreSQL's own CPU is not in it), and its CPU as a ratio of the reader's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import UNLIMITED, _create_body
from bench.service_common import (
    Rounds,
    auth,
    create_key,
    header,
    in_process_deployment,
    median_cpu,
    timing_row,
    tiny_npz,
    write_results,
)

QUEUED_JOBS = 2000
READER = "reader, 1-2 statements (thread pool)"
GetPath = Callable[[str], Awaitable[Any]]
"""Reads one job (by id) and builds its JobObject."""


def seed_jobs(key: str) -> tuple[str, str, str]:
    """(owner id, a queued job behind QUEUED_JOBS others, a cancelled job), made through the real API
    but for the jobs ahead, which are copies of the first job's row."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from api.main import create_app
    from store.db import session_scope
    from store.models import Job

    with TestClient(create_app()) as client:
        def create() -> str:
            response = client.post("/v1/fine_tuning/jobs", headers=auth(key), json=_create_body(file_id))
            return str(response.raise_for_status().json()["id"])

        file_id = client.post("/v1/files", headers=auth(key), files={"file": ("t.npz", tiny_npz())},
                              data={"purpose": "fine-tune"}).raise_for_status().json()["id"]
        cancelled = create()
        client.post(f"/v1/fine_tuning/jobs/{cancelled}/cancel", headers=auth(key)).raise_for_status()
        with session_scope() as session:
            template = session.scalar(select(Job).where(Job.id == cancelled))
            assert template is not None
            copied = {c: getattr(template, c) for c in ("owner_id", "model", "method", "config", "training_file_id")}
            session.add_all(Job(**copied, status="queued") for _ in range(QUEUED_JOBS))
        return template.owner_id, create(), cancelled


def paths(owner_id: str, database_url: str) -> tuple[dict[str, GetPath], list[Any]]:
    """The paths by name, and the async engines to dispose of afterwards."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.concurrency import run_in_threadpool

    from api.schemas.jobs import JobObject
    from store.db import SessionLocal, get_engine, get_reader
    from store.repositories import jobs
    from store.settings import get_settings

    lease = get_settings().lease_seconds

    def orm_session(job_id: str) -> JobObject:
        with SessionLocal(bind=get_engine()) as session:
            row = jobs.get(session, owner_id, job_id)
            assert row is not None
            return JobObject.from_row(row, jobs.queue_slots(session, [row.id], lease).get(row.id))

    def reader(job_id: str) -> JobObject:
        with get_reader().connect() as connection:
            found = jobs.get_with_slot(connection, owner_id, job_id, lease)
        assert found is not None
        return JobObject.from_row(*found)

    def on_async(url: str) -> tuple[Path_, Any]:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)

        async def read(job_id: str) -> JobObject:
            async with engine.connect() as connection:
                found = await connection.run_sync(jobs.get_with_slot, owner_id, job_id, lease)
            assert found is not None
            return JobObject.from_row(*found)
        return read, engine

    table: dict[str, GetPath] = {
        "orm session, 3 statements (thread pool)": lambda job_id: run_in_threadpool(orm_session, job_id),
        READER: lambda job_id: run_in_threadpool(reader, job_id),
    }
    engines = []
    drivers = [("async psycopg", database_url, "psycopg")]
    drivers.append(("async asyncpg", database_url.replace("+psycopg", "+asyncpg"), "asyncpg"))
    for name, url, module in drivers:
        if importlib.util.find_spec(module) is None:
            print(f"{name}: {module} is not installed; skipped", flush=True)
            continue
        table[f"{name}, 1-2 statements (no thread)"], engine = on_async(url)
        engines.append(engine)
    return table, engines


async def measure(table: dict[str, GetPath], job_ids: dict[str, str], calls: int, rounds: int
                  ) -> dict[tuple[str, str], Rounds]:
    """(path, job state) -> per round (cpu ms, wall ms) per GET; one unreported warm-up round."""
    results: dict[tuple[str, str], Rounds] = {}
    for round_number in range(rounds + 1):
        for name, read in table.items():
            for state, job_id in job_ids.items():
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    await read(job_id)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if round_number:
                    results.setdefault((name, state), []).append((cpu / calls * 1e3, wall / calls * 1e3))
    return results


async def run(args: argparse.Namespace, owner_id: str, database_url: str, job_ids: dict[str, str]
              ) -> dict[tuple[str, str], Rounds]:
    table, engines = paths(owner_id, database_url)
    try:
        return await measure(table, job_ids, args.calls, args.rounds)
    finally:
        for engine in engines:
            await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="GETs per path, job state and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="api_get_paths.md")
    args = parser.parse_args()
    head = header("One job GET's database work, path by path (in-process, PostgreSQL)", sys.argv)
    with in_process_deployment("xmodal-paths-", **UNLIMITED) as database_url:
        owner_id, queued, cancelled = seed_jobs(create_key(database_url))
        results = asyncio.run(run(args, owner_id, database_url, {"queued": queued, "not queued": cancelled}))
    reference = {state: median_cpu(results[(READER, state)]) for state in ("queued", "not queued")}
    lines = [*head, f"{QUEUED_JOBS} queued jobs in the deployment; {args.calls} GETs per path, job state and "
             f"round, {args.rounds} rounds after a warm-up round; medians over rounds.", "",
             "| path | job | cpu ms / GET | wall ms / GET | cpu vs reader | per round: cpu / wall ms |",
             "|---|---|---|---|---|---|",
             *(timing_row([name, state], rounds, reference[state]) for (name, state), rounds in results.items())]
    print("\n".join(lines[len(head):]))
    print(f"wrote {write_results(args.out, lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
