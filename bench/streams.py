"""Open SSE streams against the database's work (issue 14): `xmodal serve` on a fresh PostgreSQL
database, N event streams open (N = 10, then 200, side by side in one run), and PostgreSQL's own
count of transactions in that database (pg_stat_database xact_commit + xact_rollback) over a quiet
window, then over a window in which events are written one at a time, with each event's delay to
every stream (p50, p99, max).

Run: .venv/bin/python bench/streams.py [--streams 10 200] [--quiet-s 10] [--events 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_common import (STATS_SETTLE_S, auth, create_key, header, percentile,  # noqa: E402
                                  pg_activity, postgres_database, serve, service_env, upload_tiny, write_results)

JOBS = "/v1/fine_tuning/jobs"


def transactions(database_url: str) -> int:
    return pg_activity(database_url)["transactions"]


def add_event(database_url: str, job_id: str, message: str) -> None:
    from store.db import session_scope
    from store.repositories import events

    with session_scope(database_url) as session:
        events.append(session, job_id, stage="bench", message=message)


async def follow(http: httpx.AsyncClient, key: str, job_id: str, arrived: dict[str, float],
                 opened: asyncio.Event) -> None:
    async with http.stream("GET", f"{JOBS}/{job_id}/events/stream", headers=auth(key)) as response:
        assert response.status_code == 200, await response.aread()
        opened.set()
        async for line in response.aiter_lines():
            if line.startswith("data:") and '"message"' in line:
                arrived[json.loads(line[5:])["message"]] = time.monotonic()


async def measure(url: str, database_url: str, key: str, job_id: str, streams: int, quiet_s: float,
                  events: int) -> dict[str, float]:
    arrivals: list[dict[str, float]] = [{} for _ in range(streams)]
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as http:
        opened = [asyncio.Event() for _ in range(streams)]
        tasks = [asyncio.create_task(follow(http, key, job_id, arrivals[i], opened[i])) for i in range(streams)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 120)
        await asyncio.sleep(STATS_SETTLE_S)
        before = await asyncio.to_thread(transactions, database_url)
        await asyncio.sleep(quiet_s)
        quiet = await asyncio.to_thread(transactions, database_url) - before
        delays: list[float] = []
        before = await asyncio.to_thread(transactions, database_url)
        started = time.monotonic()
        for index in range(events):
            message = f"{streams}-{index}"
            await asyncio.to_thread(add_event, database_url, job_id, message)
            sent = time.monotonic()
            deadline = sent + 10.0
            while time.monotonic() < deadline and not all(message in seen for seen in arrivals):
                await asyncio.sleep(0.005)
            delays += [seen.get(message, float("inf")) - sent for seen in arrivals]
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.5 - time.monotonic()))  # 2 events/s
        await asyncio.sleep(STATS_SETTLE_S)
        busy = await asyncio.to_thread(transactions, database_url) - before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"quiet_tps": quiet / quiet_s, "tx_per_event": busy / events,
            "p50_ms": 1000 * percentile(delays, 50), "p99_ms": 1000 * percentile(delays, 99),
            "max_ms": 1000 * max(delays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--quiet-s", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as database_url:
        data_dir = Path(tmp)
        env = service_env(data_dir, database_url, "filesystem://", max_streams="0", max_streams_per_key="0",
                          rate_limit_per_minute="0")
        key = create_key(database_url)
        with serve(env, data_dir / "serve.log") as (url, _proc):
            file_id = upload_tiny(url, key)
            body = {"model": "tiny-bert", "training_file": file_id,
                    "method": {"type": "finetune", "finetune": {"training": {"epochs": 1, "batch_size": 8}}}}
            for count in args.streams:
                created = httpx.post(f"{url}{JOBS}", headers=auth(key), json=body, timeout=30)
                created.raise_for_status()
                result = asyncio.run(measure(url, database_url, key, created.json()["id"], count,
                                             args.quiet_s, args.events))
                rows.append((count, result))
                print(count, result, flush=True)
    lines = header("SSE streams against database work (PostgreSQL LISTEN/NOTIFY)", sys.argv)
    lines += ["| open streams | quiet: transactions/s | transactions per event (all streams) | delay p50 | p99 | max |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {r['quiet_tps']:.2f} | {r['tx_per_event']:.1f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms "
              f"| {r['max_ms']:.0f} ms |" for n, r in rows]
    (first, a), (last, b) = rows[0], rows[-1]
    lines += ["", f"Quiet transactions/s, {last} vs {first} streams: {b['quiet_tps']:.2f} vs {a['quiet_tps']:.2f}; "
              f"transactions per event: {b['tx_per_event'] / max(a['tx_per_event'], 1e-9):.1f}x for "
              f"{last / first:.0f}x the streams (a job's woken streams share one read)."]
    print("\n".join(lines))
    write_results("streams.md", lines)


if __name__ == "__main__":
    main()
