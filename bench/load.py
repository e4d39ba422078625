"""Load: many clients polling jobs while a worker trains, then a burst of job submissions.

    .venv/bin/python bench/load.py [--clients 200] [--seconds 60] [--jobs 500] [--burst-concurrency 50]
                                   [--api-workers 1] [--worker-concurrency 2] [--load-procs 2]
                                   [--phases poll,burst]

One deployment for both phases: a temp data dir, a fresh migrated PostgreSQL database (dropped
afterwards), an empty Redis db number as the broker, one `xmodal serve` (`--api-workers` uvicorn
processes) and one real `xmodal worker` (prefork, `--worker-concurrency` jobs at once, one job per
child, real training). The server and worker run with `XMODAL_RATE_LIMIT_PER_MINUTE=0` and
`XMODAL_MAX_ACTIVE_JOBS=0` (both limits off): this bench measures the service, not its throttles.

Every job is `tiny-bert`, method `finetune`, on a 64 x 1 x 32 float32 .npz with 0/1 labels (the
shape of tests/service/test_worker_real_run.py's `tiny_dataset()`), `training: {epochs: 1,
batch_size: 8}` — except phase 1's "trainer" job.

Phase 1 (poll, owner `poll`): a trainer job (epochs 10000, checkpoint every 10000 epochs, so it
trains through the whole window) and `--poll-jobs - 1` epochs-1 jobs; once the trainer reports
progress, `--clients` concurrent clients (asyncio, one raw keep-alive connection each: bench/api.py's
RawConnection, split over `--load-procs` processes; httpx's client CPU starved the API and the training)
poll for `--seconds` s, each alternating
`GET /v1/fine_tuning/jobs/{id}` and `GET /v1/fine_tuning/jobs/{id}/events?after=<last id seen>` on
job `client % poll-jobs`, with no pause between requests (closed loop). Any non-2xx status or
transport error is an error. Afterwards the trainer is cancelled and phase 1's jobs drain.

Phase 2 (burst, owner `burst`): `--jobs` epochs-1 jobs are POSTed at once, `--burst-concurrency`
in flight at a time, each with its own `Idempotency-Key`; then the owner's job list is paged
every `--poll-interval` s until every accepted job is terminal or `--drain-timeout` passes.
Lost: accepted but missing from the list, or not terminal by the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import RawConnection, _raw_request
from bench.service_common import (
    auth,
    create_key,
    header,
    log_problems,
    percentile,
    postgres_database,
    redis_db,
    serve,
    service_env,
    tiny_npz,
    tree_cpu_seconds,
    upload_tiny,
    worker,
    write_results,
)

TERMINAL = ("succeeded", "failed", "cancelled")
JOBS = "/v1/fine_tuning/jobs"
TRAINER_EPOCHS = 10_000


def job_body(file_id: str, epochs: int = 1, **sections: Any) -> dict[str, Any]:
    return {"model": "tiny-bert", "training_file": file_id,
            "method": {"type": "finetune", "finetune": {"training": {"epochs": epochs, "batch_size": 8}, **sections}}}


def tiny_dataset() -> bytes:
    return tiny_npz(n=64, length=32)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def list_all_jobs(client: httpx.Client, tries: int = 10) -> dict[str, dict[str, Any]]:
    """Every job of the client's key, by id (pages of 100, newest first). A page answered 5xx or not
    at all is asked again after 3 s, up to `tries` times: the bench's own bookkeeping must outlast an
    overloaded server."""
    found: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        for attempt in range(tries):
            try:
                response = client.get(JOBS, params=params)
                if response.status_code < 500 or attempt == tries - 1:
                    break
            except httpx.TransportError:
                if attempt == tries - 1:
                    raise
            time.sleep(3.0)
        response.raise_for_status()
        page = response.json()
        found.update({job["id"]: job for job in page["data"]})
        if not page["has_more"]:
            return found
        after = page["last_id"]


def wait_for(client: httpx.Client, job_ids: list[str], ready: Any, timeout: float, what: str) -> dict[str, Any]:
    """Poll the listed jobs until `ready(jobs by id)` is true; returns them. Raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = list_all_jobs(client)
        if ready({i: found.get(i) for i in job_ids}):
            return found
        if time.monotonic() > deadline:
            states = {i: (found.get(i) or {}).get("status") for i in job_ids}
            raise TimeoutError(f"{what} not within {timeout:.0f}s: {states}")
        time.sleep(1.0)


# ------------------------------------------------------------------------------------- phase 1


POLL_P99_TARGET_MS = 500
"""Issue 14: 200 pollers for 60 s, p99 under this."""


@dataclass
class PollPart:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"job": [], "events": []})
    outcomes: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)  # the first of each outcome
    events_seen: int = 0
    t0: float = 0.0
    t1: float = 0.0
    cpu_s: float = 0.0


async def _poll(url: str, key: str, job_ids: list[str], first_client: int, clients: int, start_at: float,
                seconds: float) -> PollPart:
    """Each client on a raw keep-alive connection (bench/api.py RawConnection: about a tenth of httpx's
    client CPU, which the API and the training would otherwise lose on these shared cores)."""
    part = PollPart()
    conns = await asyncio.gather(*(RawConnection.open(url) for _ in range(clients)))
    health = _raw_request(url, key, "GET", "/healthz")
    for conn in conns:  # open and warm every connection before the clock starts
        await conn.request(health)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = start_at + seconds

    async def one_client(number: int, conn: RawConnection) -> None:
        job_id = job_ids[number % len(job_ids)]
        last_event: int | None = None
        turn = number % 2  # half the clients start with events, so both endpoints are always in play
        while time.time() < deadline:
            kind = "events" if turn % 2 else "job"
            turn += 1
            path = f"{JOBS}/{job_id}" + ("/events" if kind == "events" else "")
            if kind == "events" and last_event is not None:
                path += f"?after={last_event}"
            t = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.request(_raw_request(url, key, "GET", path)), 60)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                part.latencies_ms[kind].append((time.perf_counter() - t) * 1000)
                outcome = f"transport {type(exc).__name__}"
                part.outcomes[outcome] += 1
                part.error_samples.setdefault(outcome, f"GET {path}: {type(exc).__name__}: {exc}")
                conn = await RawConnection.open(url)  # the old one may hold half a response
                continue
            part.latencies_ms[kind].append((time.perf_counter() - t) * 1000)
            part.outcomes[str(status)] += 1
            if not 200 <= status < 300:
                part.error_samples.setdefault(str(status), f"GET {path} -> {status}: {body[:500]!r}")
            elif kind == "events":
                page = json.loads(body)
                part.events_seen += len(page["data"])
                if page["last_id"] is not None:
                    last_event = int(page["last_id"])

    part.t0 = time.time()
    await asyncio.gather(*(one_client(first_client + i, conn) for i, conn in enumerate(conns)))
    part.t1 = time.time()
    for conn in conns:
        await conn.close()
    return part


def _poll_in_process(url: str, key: str, job_ids: list[str], first_client: int, clients: int, start_at: float,
                     seconds: float) -> PollPart:
    cpu0 = time.process_time()
    part = asyncio.run(_poll(url, key, job_ids, first_client, clients, start_at, seconds))
    part.cpu_s = time.process_time() - cpu0
    return part


@dataclass
class PollResult:
    parts: list[PollPart]
    seconds: float
    server_cpu_s: float
    worker_cpu_s: float
    machine_busy: float
    trainer_before: dict[str, Any]
    trainer_after: dict[str, Any]
    statuses_before: dict[str, str]
    statuses_after: dict[str, str]

    def latencies(self, kind: str | None = None) -> list[float]:
        return [ms for p in self.parts for k, values in p.latencies_ms.items() if kind in (None, k) for ms in values]

    @property
    def outcomes(self) -> Counter[str]:
        return sum((p.outcomes for p in self.parts), Counter())

    @property
    def errors(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if not outcome.startswith("2"))

    @property
    def trainer_steps(self) -> int:
        return (self.trainer_after.get("progress") or {}).get("step", 0) - \
            (self.trainer_before.get("progress") or {}).get("step", 0)


def run_polling(args: argparse.Namespace, url: str, key: str, server_pid: int, worker_pid: int) -> PollResult:
    with httpx.Client(base_url=url, headers=auth(key), timeout=60) as client:
        file_id = upload_tiny(url, key, tiny_dataset())
        trainer = client.post(JOBS, json=job_body(file_id, TRAINER_EPOCHS, checkpoint={"every_epochs": TRAINER_EPOCHS}))
        trainer.raise_for_status()
        job_ids = [trainer.json()["id"]]
        for _ in range(args.poll_jobs - 1):
            response = client.post(JOBS, json=job_body(file_id))
            response.raise_for_status()
            job_ids.append(response.json()["id"])
        print(f"poll: jobs {job_ids}; waiting for the trainer {job_ids[0]} to report progress", flush=True)
        wait_for(client, job_ids[:1], lambda jobs: ((jobs[job_ids[0]] or {}).get("progress") or {}).get("step", 0) > 0,
                 args.start_timeout, "trainer progress")
        before = {job_id: job for job_id, job in list_all_jobs(client).items() if job_id in job_ids}

        server0, worker0 = tree_cpu_seconds(server_pid), tree_cpu_seconds(worker_pid)
        busy0, total0 = machine_ticks()
        n = args.load_procs
        start_at = time.time() + 1.0 + 0.01 * args.clients  # every load process has its connections open by then
        shares = [args.clients // n + (i < args.clients % n) for i in range(n)]
        firsts = [sum(shares[:i]) for i in range(n)]
        with ProcessPoolExecutor(n) as pool:
            futures = [pool.submit(_poll_in_process, url, key, job_ids, firsts[i], shares[i], start_at, args.seconds)
                       for i in range(n) if shares[i]]
            parts = [f.result() for f in futures]
        busy1, total1 = machine_ticks()
        server_cpu = tree_cpu_seconds(server_pid) - server0
        worker_cpu = tree_cpu_seconds(worker_pid) - worker0
        after = {job_id: job for job_id, job in list_all_jobs(client).items() if job_id in job_ids}

        seconds = max(p.t1 for p in parts) - min(p.t0 for p in parts)
        result = PollResult(parts, seconds, server_cpu, worker_cpu, (busy1 - busy0) / max(total1 - total0, 1),
                            before[job_ids[0]], after[job_ids[0]], {i: before[i]["status"] for i in job_ids},
                            {i: after[i]["status"] for i in job_ids})
        client.post(f"{JOBS}/{job_ids[0]}/cancel").raise_for_status()
        wait_for(client, job_ids, lambda jobs: all((j or {}).get("status") in TERMINAL for j in jobs.values()),
                 args.start_timeout, "phase 1 jobs terminal after cancelling the trainer")
    return result


def poll_lines(args: argparse.Namespace, r: PollResult) -> list[str]:
    rows = []
    for kind, label in ((None, "both"), ("job", "GET job"), ("events", "GET events")):
        values = r.latencies(kind)
        if values:
            rows.append(f"| {label} | {len(values)} | {len(values) / r.seconds:.0f} | {percentile(values, 50):.1f} | "
                        f"{percentile(values, 95):.1f} | {percentile(values, 99):.1f} | {max(values):.1f} |")
    outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items()))
    progress0, progress1 = r.trainer_before.get("progress") or {}, r.trainer_after.get("progress") or {}
    client_cpu = sum(p.cpu_s for p in r.parts) / r.seconds
    samples = list({k: v for p in r.parts for k, v in p.error_samples.items()}.values())
    return [
        f"{args.clients} clients over {len(r.parts)} load process(es); new requests for {args.seconds:g} s, the last "
        f"response {r.seconds:.1f} s after the start (req/s over that span); "
        f"{args.poll_jobs} jobs polled (client i polls job i mod {args.poll_jobs}).", "",
        "| requests | n | req/s | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|", *rows, "",
        f"- Outcomes by status: {outcomes}; **errors: {r.errors}**",
        f"- Events returned to clients (following with `after`): {sum(p.events_seen for p in r.parts)}",
        f"- CPU during the window (CPU-s per wall-s; 1.0 = one core): load generator {client_cpu:.2f}, "
        f"`xmodal serve` {r.server_cpu_s / r.seconds:.2f}, `xmodal worker` + job processes "
        f"{r.worker_cpu_s / r.seconds:.2f}; whole machine {r.machine_busy * 100:.0f}% busy",
        f"- Trainer job {r.trainer_after['id']}: {r.trainer_before['status']} -> {r.trainer_after['status']}, "
        f"progress step {progress0.get('step')} -> {progress1.get('step')} (stage {progress1.get('stage')}): "
        f"**{'trained during the window' if r.trainer_steps > 0 else 'did NOT advance'}** "
        f"(+{r.trainer_steps} steps, {r.trainer_steps / r.seconds:.1f} steps/s)",
        f"- Other polled jobs, status before -> after the window: "
        + ", ".join(f"{r.statuses_before[i]} -> {r.statuses_after[i]}" for i in list(r.statuses_before)[1:]),
        *(["- Error samples: " + "; ".join(f"`{s}`" for s in samples)] if samples else []),
    ]


# ------------------------------------------------------------------------------------- phase 2


@dataclass
class BurstResult:
    outcomes: Counter[str]
    accepted: list[str]
    latencies_ms: list[float]
    submit_s: float
    error_samples: dict[str, str]  # the first of each outcome
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    unexpected: int = 0
    drain_s: float | None = None
    watched_s: float = 0.0
    server_span_s: float | None = None
    timeline: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> list[str]:
        return [i for i in self.accepted if (self.final.get(i) or {}).get("status") in TERMINAL]

    @property
    def missing(self) -> list[str]:
        return [i for i in self.accepted if i not in self.final]

    @property
    def lost(self) -> int:
        return len(self.accepted) - len(self.terminal)


async def _submit(url: str, key: str, file_id: str, jobs: int, concurrency: int) -> BurstResult:
    token = secrets.token_hex(4)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    outcomes: Counter[str] = Counter()
    accepted: list[str] = []
    latencies: list[float] = []
    samples: dict[str, str] = {}
    gate = asyncio.Semaphore(concurrency)
    body = job_body(file_id)
    async with httpx.AsyncClient(base_url=url, headers=auth(key), limits=limits, timeout=120) as client:

        async def one(number: int) -> None:
            async with gate:
                t = time.perf_counter()
                try:
                    response = await client.post(JOBS, json=body, headers={"Idempotency-Key": f"load-{token}-{number}"})
                except httpx.HTTPError as exc:
                    outcome = f"transport {type(exc).__name__}"
                    outcomes[outcome] += 1
                    samples.setdefault(outcome, f"POST #{number}: {type(exc).__name__}: {exc}")
                    return
                latencies.append((time.perf_counter() - t) * 1000)
                outcomes[str(response.status_code)] += 1
                if response.is_success:
                    accepted.append(response.json()["id"])
                else:
                    samples.setdefault(str(response.status_code),
                                       f"POST #{number} -> {response.status_code}: {response.text[:500]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        submit_s = time.perf_counter() - t0
    return BurstResult(outcomes, accepted, latencies, submit_s, samples)


def run_burst(args: argparse.Namespace, url: str, key: str) -> BurstResult:
    file_id = upload_tiny(url, key, tiny_dataset())
    started = time.monotonic()
    result = asyncio.run(_submit(url, key, file_id, args.jobs, args.burst_concurrency))
    print(f"burst: {len(result.accepted)}/{args.jobs} accepted in {result.submit_s:.1f} s {dict(result.outcomes)}",
          flush=True)
    accepted = set(result.accepted)
    deadline = started + args.drain_timeout
    logged = -60.0
    with httpx.Client(base_url=url, headers=auth(key), timeout=60) as client:
        while True:
            found = list_all_jobs(client)
            result.final = {i: found[i] for i in accepted if i in found}
            result.unexpected = len(set(found) - accepted)
            counts = Counter(job["status"] for job in result.final.values())
            elapsed = time.monotonic() - started
            line = (f"{elapsed:7.0f} s  " + "  ".join(f"{s} {counts.get(s, 0)}" for s in
                                                      ("queued", "running", *TERMINAL))
                    + f"  missing {len(result.missing)}")
            print(f"burst drain {line}", flush=True)
            if elapsed - logged >= 60:
                result.timeline.append(line)
                logged = elapsed
            result.watched_s = elapsed
            done = len(result.terminal) == len(accepted)
            if done or time.monotonic() > deadline:
                result.drain_s = elapsed if done else None
                if result.timeline[-1] != line:
                    result.timeline.append(line)
                break
            time.sleep(args.poll_interval)
    if result.terminal:
        created = min(result.final[i]["created_at"] for i in result.terminal)
        finished = max(result.final[i]["finished_at"] or 0 for i in result.terminal)
        result.server_span_s = finished - created
    return result


def burst_lines(args: argparse.Namespace, r: BurstResult) -> list[str]:
    outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items()))
    states = Counter(job["status"] for job in r.final.values())
    errors = Counter((job.get("error") or {}).get("code") for job in r.final.values() if job["status"] == "failed")
    attempts = Counter(job["attempt"] for job in r.final.values())
    failed_samples = [f"{job['id']}: {job['error']}" for job in r.final.values() if job["status"] == "failed"][:3]
    lat = r.latencies_ms
    drain = r.drain_s
    lines = [
        f"{args.jobs} POSTs, {args.burst_concurrency} in flight at a time, distinct Idempotency-Key each; "
        f"worker concurrency {args.worker_concurrency}.", "",
        f"- Submitted in {r.submit_s:.1f} s ({args.jobs / r.submit_s:.0f} POST/s); POST latency p50 "
        f"{percentile(lat, 50):.0f} ms, p99 {percentile(lat, 99):.0f} ms, max {max(lat):.0f} ms" if lat else
        f"- Submitted in {r.submit_s:.1f} s",
        f"- Outcomes by status: {outcomes}; **accepted {len(r.accepted)} / {args.jobs}** "
        f"({len(set(r.accepted))} distinct job ids)",
        f"- Final states of the accepted jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
        f"- **Lost: {r.lost}** (missing from the list: {len(r.missing)}; listed but not terminal when the drain "
        f"stopped: {r.lost - len(r.missing)}); jobs in the owner's list that no POST returned: {r.unexpected}",
        f"- Attempts per job: " + ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items())),
        (f"- Drain: all terminal {drain:.0f} s after the first POST (list polled every {args.poll_interval:g} s) = "
         f"{len(r.terminal) / (drain / 60):.1f} jobs/minute; server clock, first created_at -> last finished_at: "
         f"{r.server_span_s:.0f} s" if drain else
         f"- Drain: **not all terminal within {args.drain_timeout:.0f} s**: {len(r.terminal)} terminal after "
         f"{r.watched_s:.0f} s = {len(r.terminal) / (r.watched_s / 60):.1f} jobs/minute; at that rate all "
         f"{len(r.accepted)} would take about {len(r.accepted) / max(len(r.terminal), 1) * r.watched_s / 60:.0f} min"),
    ]
    if errors:
        lines.append("- Failed jobs by error code: " + ", ".join(f"{k}: {v}" for k, v in errors.items())
                     + "; e.g. " + "; ".join(f"`{s}`" for s in failed_samples))
    if r.error_samples:
        lines.append("- Rejected POST samples: " + "; ".join(f"`{s}`" for s in r.error_samples.values()))
    lines += ["", "Drain timeline (about one line a minute; seconds after the first POST):", "", "```",
              *r.timeline, "```"]
    return lines


def shortfalls(args: argparse.Namespace, r: BurstResult) -> list[str]:
    """What kept phase 2 from its target, in words."""
    reasons = []
    if len(r.accepted) < args.jobs:
        reasons.append(f"{args.jobs - len(r.accepted)} rejected")
    if r.missing:
        reasons.append(f"{len(r.missing)} missing from the list")
    if r.lost > len(r.missing):
        reasons.append(f"{r.lost - len(r.missing)} not terminal within --drain-timeout {args.drain_timeout:.0f} s")
    return reasons


# ------------------------------------------------------------------------------------- main


def log_section(name: str, log: Path, limit: int = 6) -> list[str]:
    problems = log_problems(log)
    lines = [f"### {name} log: {sum(n for n, _ in problems)} failure(s), {len(problems)} distinct", ""]
    for count, excerpt in problems[:limit]:
        lines += [f"{count} x:", "", "```", excerpt, "```", ""]
    return lines if problems else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="poll,burst", help="comma-separated: poll, burst")
    parser.add_argument("--clients", type=int, default=200, help="phase 1: concurrent polling clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="phase 1: polling window")
    parser.add_argument("--poll-jobs", type=int, default=4, help="phase 1: jobs polled (the first one trains)")
    parser.add_argument("--load-procs", type=int, default=2, help="phase 1: client processes")
    parser.add_argument("--jobs", type=int, default=500, help="phase 2: jobs submitted in the burst")
    parser.add_argument("--burst-concurrency", type=int, default=50, help="phase 2: POSTs in flight at once")
    parser.add_argument("--drain-timeout", type=float, default=2700.0, help="phase 2: seconds for all to be terminal")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="phase 2: seconds between list scans")
    parser.add_argument("--start-timeout", type=float, default=300.0,
                        help="phase 1: seconds for the trainer to start, and for its jobs to end after")
    parser.add_argument("--api-workers", type=int, default=1, help="`xmodal serve --workers`")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="`xmodal worker --concurrency`")
    parser.add_argument("--out", default="load.md")
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    head = header("Load: polling clients while a worker trains; a burst of job submissions", sys.argv)

    body: list[str] = []
    problems: list[str] = []  # filled from the logs before they go away with the temp dir
    verdicts: list[str] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xmodal-bench-load-")))
        database_url = stack.enter_context(postgres_database())
        env = service_env(tmp / "data", database_url, stack.enter_context(redis_db()),
                          rate_limit_per_minute="0", max_active_jobs="0", cache_dir=str(tmp / "cache"))
        server_log, worker_log = tmp / "server.log", tmp / "worker.log"
        url, server = stack.enter_context(serve(env, server_log, args.api_workers))
        work = stack.enter_context(worker(env, worker_log, args.worker_concurrency))
        print(f"server {url} (pid {server.pid}), worker pid {work.pid}", flush=True)
        try:
            if "poll" in phases:
                polled = run_polling(args, url, create_key(database_url, "poll"), server.pid, work.pid)
                body += ["## Phase 1: polling while a worker trains", "", *poll_lines(args, polled), ""]
                p99 = percentile(polled.latencies(), 99)
                verdicts.append(f"- Phase 1: {polled.errors} errors in {len(polled.latencies())} requests "
                                f"(target 0): **{'PASS' if polled.errors == 0 else 'FAIL'}**; p99 {p99:.0f} ms "
                                f"(target < {POLL_P99_TARGET_MS} ms, issue 14): "
                                f"**{'PASS' if p99 < POLL_P99_TARGET_MS else 'FAIL'}**; trainer advanced: **{'yes' if polled.trainer_steps > 0 else 'NO'}**")
                print("\n".join(body[-12:]), flush=True)
            if "burst" in phases:
                burst = run_burst(args, url, create_key(database_url, "burst"))
                body += ["## Phase 2: a burst of job submissions", "", *burst_lines(args, burst), ""]
                ok = len(burst.accepted) == args.jobs and burst.lost == 0
                why = shortfalls(args, burst)
                verdicts.append(f"- Phase 2: accepted {len(burst.accepted)}/{args.jobs}, lost {burst.lost}, terminal "
                                f"{len(burst.terminal)}/{len(burst.accepted)} (target: all accepted, none lost, all "
                                f"terminal): **{'PASS' if ok else 'FAIL'}**" + (f" ({'; '.join(why)})" if why else ""))
        finally:
            problems = [*log_section("xmodal serve", server_log), *log_section("xmodal worker", worker_log)]
            if problems:
                print("\n".join(problems), flush=True)

    lines = [*head,
             f"Deployment: one `xmodal serve --workers {args.api_workers}` and one `xmodal worker --concurrency "
             f"{args.worker_concurrency}` (real training) on a fresh PostgreSQL database and a Redis broker, "
             "`XMODAL_RATE_LIMIT_PER_MINUTE=0` and `XMODAL_MAX_ACTIVE_JOBS=0` (both limits off for this bench). "
             "Jobs: `tiny-bert`, method `finetune`, `training: {epochs: 1, batch_size: 8}` on a 64 x 1 x 32 .npz. "
             "The load generator, the API, PostgreSQL, Redis and the worker's training processes all share this "
             "machine's CPUs, so they compete with each other: the figures are for that setting.", "",
             *body, "Targets:", "", *verdicts, ""]
    lines += ["## Server and worker logs (tracebacks, WARNING/ERROR lines)", "", *(problems or ["None found."]), ""]
    print("\n".join(verdicts))
    path = write_results(args.out, lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
