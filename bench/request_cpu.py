"""CPU per request in the API process, with no network and no other clients: the app called directly.

    .venv/bin/python bench/request_cpu.py [--requests 2000] [--rounds 3] [--out request_cpu.md]

What bench/api.py cannot separate: under load, the API, PostgreSQL and the load generator share two
cores, so its req/s mixes all three. Here one httpx.AsyncClient calls the ASGI app in this process
(`httpx.ASGITransport`, lifespan started) on a fresh migrated PostgreSQL database, one request at a
time, and reads this process's CPU time (the client's share included: compare against `/healthz`,
which does the same client work and no database work). PostgreSQL's own CPU is not in it.

Endpoints: `/healthz`, `GET /v1/fine_tuning/jobs/{id}` for a queued job, and its `/events?after=0`.
Rounds interleave the endpoints; the table gives each one's median over rounds, and its ratio to healthz.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import UNLIMITED, _create_body
from bench.service_common import Rounds, auth, create_key, header, in_process_deployment, median_cpu, timing_row, tiny_npz, write_results

WARM_UP = 200


async def measure(key: str, requests: int, rounds: int) -> dict[str, Rounds]:
    """endpoint -> per round (cpu ms, wall ms) per request."""
    from api.main import create_app

    app = create_app()
    results: dict[str, Rounds] = {}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", headers=auth(key)) as client:
        upload = await client.post("/v1/files", files={"file": ("t.npz", tiny_npz())}, data={"purpose": "fine-tune"})
        created = await client.post("/v1/fine_tuning/jobs", json=_create_body(upload.raise_for_status().json()["id"]))
        job = f"/v1/fine_tuning/jobs/{created.raise_for_status().json()['id']}"
        paths = {"healthz": "/healthz", "job GET (queued)": job, "job events": f"{job}/events?after=0"}
        for round_number in range(rounds + 1):
            for name, path in paths.items():
                count = WARM_UP if round_number == 0 else requests
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(count):
                    (await client.get(path)).raise_for_status()
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if round_number:
                    results.setdefault(name, []).append((cpu / count * 1e3, wall / count * 1e3))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="request_cpu.md")
    args = parser.parse_args()
    head = header("CPU per request in the API process (in-process ASGI calls, PostgreSQL)", sys.argv)
    with in_process_deployment("xmodal-cpu-", **UNLIMITED) as database_url:
        results = asyncio.run(measure(create_key(database_url), args.requests, args.rounds))
    healthz = median_cpu(results["healthz"])
    lines = [*head, f"{args.requests} requests per endpoint and round, one at a time, {args.rounds} rounds after "
             f"{WARM_UP} warm-up requests each; medians over rounds; CPU of this process (client included).", "",
             "| endpoint | cpu ms / request | wall ms / request | cpu vs healthz | per round: cpu / wall ms |",
             "|---|---|---|---|---|", *(timing_row([name], rounds, healthz) for name, rounds in results.items())]
    print("\n".join(lines[len(head):]))
    print(f"wrote {write_results(args.out, lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
