"""API latency and throughput under 50 concurrent clients, against a real `xmodal serve` process.

    .venv/bin/python bench/api.py [--clients 50] [--requests 1000] [--poll-requests 10000] [--rounds 3]
                                  [--backends postgresql,sqlite] [--load-procs 1] [--workers 1]

Set-up per backend: a temp data dir, a fresh migrated database (PostgreSQL: a new database on
127.0.0.1:5432, dropped afterwards; SQLite: a file in the data dir), Redis as the broker (an empty
db number, flushed afterwards) and NO worker, so created jobs stay `queued`; one `xmodal serve`
(`--workers` uvicorn processes, default 1) per backend, an API key, and a tiny uploaded .npz.

Endpoints: `GET /healthz` (no database), `POST /v1/fine_tuning/jobs` (key lookup, config
validation, file check, INSERT + COMMIT, one Redis publish), `GET /v1/fine_tuning/jobs/{id}` (key
lookup + one SELECT, ids drawn at random from the jobs created so far: each GET a job no GET asked
about just before, so it reads the database), and `poll`: the same GET with each connection asking
about one job of its own again and again, as a client watching its job does (on PostgreSQL answered
from memory until the job changes; a queued job's answer is also read again when the queue changes
and after 5-10 s: api/answers.py).

Each phase sends `--requests` requests over `--clients` concurrent keep-alive connections (one
httpx.AsyncClient per process, one asyncio task per client). Phases are interleaved: each round
runs healthz, create, get on every backend (backend order alternates per round), after one
unreported warm-up round; the table reports the median over rounds of each phase's p50, p99 and
requests/s. Client and server CPU seconds per phase are read from /proc, to tell whether the
client or the server was the bottleneck. With `--load-procs N` the clients are split over N
client processes (started together; throughput = all requests / (last finish - first start)).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_common import (
    auth,
    cpu_seconds,
    create_key,
    header,
    percentile,
    STATS_SETTLE_S,
    pg_activity,
    postgres_database,
    redis_db,
    serve,
    service_env,
    sqlite_database,
    upload_tiny,
    write_results,
)

GET_P99_TARGET_MS = 50.0
UNLIMITED = {"rate_limit_per_minute": "0", "max_active_jobs": "0"}  # thousands of requests and queued jobs per key
GET_VS_HEALTHZ_TARGET = 0.5
ENDPOINTS = ("healthz", "create", "get", "poll")


@dataclass
class Target:
    backend: str
    url: str
    key: str
    file_id: str
    server_pid: int
    database_url: str
    job_ids: list[str] = field(default_factory=list)
    requests: int = 0


@dataclass
class PhaseResult:
    latencies_ms: list[float]
    errors: int
    seconds: float
    client_cpu_s: float
    server_cpu_s: float
    new_job_ids: list[str]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0


def _create_body(file_id: str) -> dict:
    return {"model": "tiny-bert", "training_file": file_id,
            "method": {"type": "finetune", "finetune": {"training": {"epochs": 1, "batch_size": 8}}}}


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a pre-built request out, a
    Content-Length response in. About 10x less client CPU per request than httpx, which matters
    on a 2-core machine where the client shares the cores with the server and the database."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        return status, await self.reader.readexactly(int(match.group(1)))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _raw_request(url: str, key: str, method: str, path: str, body: bytes = b"") -> bytes:
    host = url.removeprefix("http://")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {key}"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _load(url: str, key: str, endpoint: str, file_id: str, job_ids: list[str], clients: int,
                requests: int, start_at: float, client_kind: str) -> tuple[list[float], int, float, float, list[str]]:
    """`requests` requests over `clients` concurrent connections; returns (latencies ms, errors, t0, t1, new ids)."""
    latencies: list[float] = []
    created: list[str] = []
    errors = 0
    remaining = requests
    rng = random.Random()  # a new draw each phase: a GET of a job drawn just before would be answered from memory
    body = json.dumps(_create_body(file_id)).encode()
    health_raw = _raw_request(url, key, "GET", "/healthz")
    create_raw = _raw_request(url, key, "POST", "/v1/fine_tuning/jobs", body)
    get_raws = [_raw_request(url, key, "GET", f"/v1/fine_tuning/jobs/{job_id}") for job_id in job_ids]

    async def raw_client(number: int, conn: RawConnection) -> None:
        nonlocal remaining, errors
        own = get_raws[number % len(get_raws)] if get_raws else b""  # the job this connection polls
        while remaining > 0:
            remaining -= 1
            raw = {"healthz": health_raw, "create": create_raw, "poll": own}.get(endpoint) or rng.choice(get_raws)
            t = time.perf_counter()
            status, content = await conn.request(raw)
            latencies.append((time.perf_counter() - t) * 1000)
            if status != 200:
                errors += 1
            elif endpoint == "create":
                created.append(json.loads(content)["id"])

    if client_kind == "raw":
        conns = await asyncio.gather(*(RawConnection.open(url) for _ in range(clients)))
        for conn in conns:  # warm each connection before the clock starts
            await conn.request(health_raw)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        await asyncio.gather(*(raw_client(number, conn) for number, conn in enumerate(conns)))
        t1 = time.time()
        for conn in conns:
            await conn.close()
        return latencies, errors, t0, t1, created

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=auth(key), limits=limits, timeout=60) as client:
        await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))
        create_body = _create_body(file_id)

        async def httpx_client(number: int) -> None:
            nonlocal remaining, errors
            own = job_ids[number % len(job_ids)] if job_ids else ""
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                if endpoint == "healthz":
                    response = await client.get("/healthz")
                elif endpoint == "create":
                    response = await client.post("/v1/fine_tuning/jobs", json=create_body)
                else:
                    response = await client.get(f"/v1/fine_tuning/jobs/{own if endpoint == 'poll' else rng.choice(job_ids)}")
                latencies.append((time.perf_counter() - t) * 1000)
                if response.status_code != 200:
                    errors += 1
                elif endpoint == "create":
                    created.append(response.json()["id"])

        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.time()
        await asyncio.gather(*(httpx_client(number) for number in range(clients)))
        t1 = time.time()
    return latencies, errors, t0, t1, created


def _load_in_process(url: str, key: str, endpoint: str, file_id: str, job_ids: list[str], clients: int,
                     requests: int, start_at: float, client_kind: str,
                     ) -> tuple[list[float], int, float, float, list[str], float]:
    cpu0 = time.process_time()
    result = asyncio.run(_load(url, key, endpoint, file_id, job_ids, clients, requests, start_at, client_kind))
    return (*result, time.process_time() - cpu0)


def run_phase(target: Target, endpoint: str, clients: int, requests: int, args: argparse.Namespace,
              pool: ProcessPoolExecutor | None) -> PhaseResult:
    server_cpu0 = cpu_seconds(target.server_pid, children=True)
    if pool is None or clients == 1:
        start_at = time.time()
        parts = [_load_in_process(target.url, target.key, endpoint, target.file_id, target.job_ids,
                                  clients, requests, start_at, args.client)]
    else:
        start_at = time.time() + 1.0  # every load process has its connections open by then
        n = args.load_procs
        futures = [pool.submit(_load_in_process, target.url, target.key, endpoint, target.file_id, target.job_ids,
                               clients // n + (i < clients % n), requests // n + (i < requests % n),
                               start_at, args.client) for i in range(n)]
        parts = [f.result() for f in futures]
    server_cpu = cpu_seconds(target.server_pid, children=True) - server_cpu0
    latencies = [ms for part in parts for ms in part[0]]
    created = [job_id for part in parts for job_id in part[4]]
    seconds = max(p[3] for p in parts) - min(p[2] for p in parts)
    return PhaseResult(latencies, sum(p[1] for p in parts), seconds, sum(p[5] for p in parts), server_cpu, created)


def _stats(result: PhaseResult) -> dict[str, float]:
    return {"p50": percentile(result.latencies_ms, 50), "p99": percentile(result.latencies_ms, 99),
            "rps": result.rps, "errors": result.errors, "client_cpu": result.client_cpu_s / result.seconds,
            "server_cpu": result.server_cpu_s / result.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000, help="requests per phase")
    parser.add_argument("--poll-requests", type=int, default=10000,
                        help="requests of the poll phase: a few seconds of polling, not its first half second")
    parser.add_argument("--rounds", type=int, default=3, help="reported rounds (after one warm-up round)")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--load-procs", type=int, default=1, help="client processes (1: the bench process itself)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: minimal asyncio HTTP/1.1 keep-alive client (default); httpx: httpx.AsyncClient")
    parser.add_argument("--serial-requests", type=int, default=100,
                        help="requests per endpoint at 1 client each round (unloaded latency); 0: skip")
    parser.add_argument("--workers", type=int, default=1, help="`xmodal serve --workers`: API processes per backend")
    parser.add_argument("--out", default="api.md")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    head = header("API latency and throughput (real `xmodal serve`, 50 concurrent clients)", sys.argv)

    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xmodal-bench-api-")))
        broker = stack.enter_context(redis_db())
        targets = []
        for backend in backends:
            data_dir = tmp / backend
            data_dir.mkdir()
            database_url = stack.enter_context(postgres_database()) if backend == "postgresql" \
                else sqlite_database(data_dir)
            key = create_key(database_url)
            url, proc = stack.enter_context(serve(service_env(data_dir, database_url, broker, **UNLIMITED), tmp / f"{backend}.log",
                                                  args.workers))
            targets.append(Target(backend, url, key, upload_tiny(url, key), proc.pid, database_url))
            print(f"{backend}: {url} (pid {proc.pid})", flush=True)
        pool = stack.enter_context(ProcessPoolExecutor(args.load_procs)) if args.load_procs > 1 else None
        postgres = [t for t in targets if t.backend == "postgresql"]
        if postgres:
            time.sleep(STATS_SETTLE_S)
        activity_before = {t.backend: pg_activity(t.database_url) for t in postgres}

        for round_no in range(args.rounds + 1):
            order = targets if round_no % 2 == 0 else targets[::-1]
            for target in order:
                phases = [(e, args.clients, args.poll_requests if e == "poll" else args.requests) for e in ENDPOINTS]
                if args.serial_requests:
                    phases += [(e, 1, args.serial_requests) for e in ENDPOINTS]
                for endpoint, clients, requests in phases:
                    result = run_phase(target, endpoint, clients, requests, args, pool)
                    target.job_ids.extend(result.new_job_ids)
                    target.requests += requests
                    stats = _stats(result)
                    label = "warm-up" if round_no == 0 else f"round {round_no}"
                    print(f"{label:8} {target.backend:10} {endpoint:7} c={clients:<3} p50 {stats['p50']:7.1f} ms  "
                          f"p99 {stats['p99']:7.1f} ms  {stats['rps']:7.1f} req/s  errors {result.errors}  "
                          f"client cpu {stats['client_cpu']:.2f}  server cpu {stats['server_cpu']:.2f}", flush=True)
                    if round_no > 0:
                        results.setdefault((target.backend, endpoint, clients), []).append(stats)
        if postgres:
            time.sleep(STATS_SETTLE_S)
        activity = {t.backend: {k: v - activity_before[t.backend][k] for k, v in pg_activity(t.database_url).items()}
                    for t in postgres}

    client_note = ("a minimal asyncio HTTP/1.1 keep-alive client (bench/api.py RawConnection)" if args.client == "raw"
                   else "httpx.AsyncClient")
    lines = [*head,
             f"Workload: {args.clients} concurrent keep-alive connections, {args.requests} requests per phase "
             f"({args.poll_requests} for poll), "
             f"{args.rounds} interleaved rounds after 1 warm-up round; client: {client_note}, "
             + ("in the bench process (asyncio, one task per connection)" if args.load_procs == 1
                else f"split over {args.load_procs} load processes")
             + f"; server: one `xmodal serve --workers {args.workers}` (uvicorn, {args.workers} process"
             + ("es; server cpu sums the supervisor and its workers" if args.workers > 1 else "")
             + ") per backend, Redis broker, no worker (jobs stay queued)."
             + (f" Also {args.serial_requests} requests per endpoint from 1 client each round (unloaded latency)."
                if args.serial_requests else ""),
             "",
             "Medians over rounds (latency in ms; cpu = CPU-seconds per wall-second of the phase, 1.0 = one full core):",
             "",
             "| backend | endpoint | clients | p50 ms | p99 ms | req/s | errors | client cpu | server cpu | per round: p99 ms / req/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for backend in backends:
        for (b_name, endpoint, clients), rows in results.items():
            if b_name != backend:
                continue
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            per_round = ", ".join(f"{r['p99']:.0f} / {r['rps']:.0f}" for r in rows)
            lines.append(f"| {backend} | {endpoint} | {clients} | {med['p50']:.1f} | {med['p99']:.1f} | {med['rps']:.0f} | "
                         f"{int(sum(r['errors'] for r in rows))} | {med['client_cpu']:.2f} | {med['server_cpu']:.2f} | {per_round} |")
        health_rows = results[(backend, "healthz", args.clients)]
        for endpoint in ("get", "poll"):
            get_rows = results[(backend, endpoint, args.clients)]
            get_p99 = statistics.median(r["p99"] for r in get_rows)
            ratio = statistics.median(g["rps"] / h["rps"] for g, h in zip(get_rows, health_rows))
            verdicts.append(
                f"- {backend}: {endpoint} p99 at {args.clients} clients {get_p99:.1f} ms (target < {GET_P99_TARGET_MS:.0f}): "
                f"**{'PASS' if get_p99 < GET_P99_TARGET_MS else 'FAIL'}**; {endpoint}/healthz throughput "
                f"{ratio:.2f} (median of per-round ratios; target >= {GET_VS_HEALTHZ_TARGET}): "
                f"**{'PASS' if ratio >= GET_VS_HEALTHZ_TARGET else 'FAIL'}**")
    for target in targets:
        if target.backend in activity:
            opened, xacts = activity[target.backend]["sessions"], activity[target.backend]["transactions"]
            lines += ["", f"PostgreSQL's own counters over all rounds (warm-up included; pg_stat_database): "
                          f"{opened} sessions opened and {xacts} transactions for {target.requests} requests "
                          f"({xacts / target.requests:.2f} transactions per request, healthz included)."]
    lines += ["", "Targets:", "", *verdicts]
    print("\n".join(lines[len(head):]))
    path = write_results(args.out, lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
