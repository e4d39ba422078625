"""Dispatch latency: from sending `POST /v1/fine_tuning/jobs` to a warm `xmodal worker` marking the
job `running`, on Redis and on the filesystem:// broker. Every run is reported, with the median and
the range.

    .venv/bin/python bench/dispatch.py [--jobs 5]

Two deployments run side by side, each with its own temp data dir, its own fresh PostgreSQL
database (so the broker is the only difference), one `xmodal serve` and one `xmodal worker`
(Celery prefork, concurrency 1, one job per child): `redis` (an empty Redis db number) and
`filesystem` (`filesystem://`, folders under the data dir). Jobs alternate between the two.

The job names a model that does not exist (`no-such-model-anywhere`): the deployment lists it in
`XMODAL_ALLOWED_HUB_MODELS` so the API accepts it, the worker claims it (sets `started_at`, status `running`) and then
fails it with `invalid_config`, which frees the worker without training anything. One such job
per deployment warms the worker first (unreported). Each measured job is submitted only after the
previous one finished and the worker had `--settle` seconds to replace its pool child, so every
measurement is "idle warm worker picks up a new job".

Measured per job (wall clock, one machine), every interval from the moment the client starts
sending the POST (the API publishes the Celery message before it answers, so a clock started when
the response arrives can read below zero):
- post -> started_at: `jobs.started_at` (stamped by the worker's claim) minus the moment the
  client started the POST (the headline number; it includes the API's create request);
- post -> received: the worker main process's "Task xmodal.run_job[...] received" log line (ms
  resolution): broker delivery; the rest, received -> started_at, is the hand-off to the pool child
  and the claim;
- post -> seen running: when a 10 ms poll of the database row first saw `started_at` set (an upper
  bound that includes the poll interval).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_common import (
    auth,
    create_key,
    header,
    postgres_database,
    redis_db,
    serve,
    service_env,
    upload_tiny,
    worker,
    write_results,
)

TARGET_REDIS_S = 1.0
POLL_S = 0.01
BAD_MODEL = "no-such-model-anywhere"
RECEIVED = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Task xmodal\.run_job\[[^\]]+\] received")


@dataclass
class Deployment:
    broker: str
    url: str
    key: str
    file_id: str
    database_url: str
    worker_log: Path
    post_to_started: list[float] = field(default_factory=list)
    post_to_seen: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    post_to_received: list[float] = field(default_factory=list)
    received_seen: int = 0

    def last_received(self) -> float | None:
        """Wall time of the newest 'Task ... received' line of the worker's main process, if new."""
        stamps = RECEIVED.findall(self.worker_log.read_text(errors="replace"))
        if len(stamps) <= self.received_seen:
            return None
        self.received_seen = len(stamps)
        return dt.datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as Celery logs


def _job_times(database_url: str, job_id: str) -> tuple[dt.datetime | None, str]:
    from sqlalchemy import select

    from store.db import session_scope
    from store.models import Job

    with session_scope(database_url) as session:
        row = session.execute(select(Job.started_at, Job.status).where(Job.id == job_id)).one()
    started = row.started_at
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=dt.UTC)
    return started, row.status


def run_one(dep: Deployment, timeout: float) -> tuple[float, float, float, str, float]:
    """Submit one job; returns (post->started_at s, post->seen s, post->finished s, final status,
    post->received by the worker's main process s, from its log; NaN if not found)."""
    body = {"model": BAD_MODEL, "training_file": dep.file_id,
            "method": {"type": "finetune", "finetune": {"training": {"epochs": 1, "batch_size": 8}}}}
    posted_wall, posted = time.time(), time.perf_counter()  # before the request: the worker may claim before it returns
    response = httpx.post(f"{dep.url}/v1/fine_tuning/jobs", headers=auth(dep.key), json=body, timeout=30)
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = posted + timeout
    started, seen = None, None
    while time.perf_counter() < deadline:
        started, status = _job_times(dep.database_url, job_id)
        if started is not None and seen is None:
            seen = time.perf_counter() - posted
        if status in ("succeeded", "failed", "cancelled"):
            assert started is not None and seen is not None
            finished = time.perf_counter() - posted
            received = dep.last_received()
            return (started.timestamp() - posted_wall, seen, finished, status,
                    received - posted_wall if received is not None else float("nan"))
        time.sleep(POLL_S)
    raise TimeoutError(f"job {job_id} on {dep.broker} not finished after {timeout}s (started_at {started});\n"
                       f"worker log tail:\n{dep.worker_log.read_text(errors='replace')[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10, help="measured jobs per broker")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds between a job's end and the next submit")
    parser.add_argument("--timeout", type=float, default=180.0, help="per job")
    args = parser.parse_args()
    head = header("Dispatch latency: job create -> worker marks it running", sys.argv)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xmodal-bench-dispatch-")))
        deployments = []
        for broker in ("redis", "filesystem"):
            data_dir = tmp / broker
            data_dir.mkdir()
            database_url = stack.enter_context(postgres_database())
            broker_url = stack.enter_context(redis_db()) if broker == "redis" else "filesystem://"
            env = service_env(data_dir, database_url, broker_url, cache_dir=str(tmp / "cache"),
                              allowed_hub_models=BAD_MODEL)  # accepted by the API, failed by the worker
            key = create_key(database_url)
            url, _ = stack.enter_context(serve(env, tmp / f"{broker}-server.log"))
            stack.enter_context(worker(env, tmp / f"{broker}-worker.log"))
            deployments.append(Deployment(broker, url, key, upload_tiny(url, key), database_url,
                                          tmp / f"{broker}-worker.log"))
        for dep in deployments:  # warm-up (the worker may still be starting: generous timeout)
            started, seen, finished, status, received = run_one(dep, timeout=args.timeout + 120)
            print(f"warm-up {dep.broker:10} post->received {received * 1000:8.1f} ms  post->started {started * 1000:8.1f} ms"
                  f"  seen {seen * 1000:8.1f} ms  finished {finished:6.1f} s ({status})", flush=True)
            time.sleep(args.settle)
        for i in range(args.jobs):
            order = deployments if i % 2 == 0 else deployments[::-1]
            for dep in order:
                started, seen, finished, status, received = run_one(dep, args.timeout)
                dep.post_to_received.append(received)
                dep.post_to_started.append(started)
                dep.post_to_seen.append(seen)
                dep.finish_s.append(finished)
                print(f"job {i + 1}   {dep.broker:10} post->received {received * 1000:8.1f} ms  post->started "
                      f"{started * 1000:8.1f} ms  seen {seen * 1000:8.1f} ms  finished {finished:6.1f} s ({status})",
                      flush=True)
                time.sleep(args.settle)

    from store.queue import FILESYSTEM_POLLING_INTERVAL_S

    lines = [*head,
             (f"Workload: per broker, one `xmodal serve` + one warm `xmodal worker` (prefork, concurrency 1, one job per "
             f"child) on its own fresh PostgreSQL database; {args.jobs} measured jobs per broker after 1 warm-up job, "
             f"brokers alternating; each job names a model that does not exist, so the worker claims it (started_at, "
             f"status running) and fails it at once with invalid_config; next submit {args.settle} s after the previous "
             f"job finished (idle worker)."),
             "",
             "| broker | median post->started_at ms | range ms | every run, in order (ms) | every post->received (ms, worker log) | median post->seen running ms (10 ms DB poll) | median post->finished s |",
             "|---|---|---|---|---|---|---|"]
    verdict = []
    for dep in deployments:
        med, worst = statistics.median(dep.post_to_started), max(dep.post_to_started)
        lines.append(f"| {dep.broker} | {med * 1000:.0f} | {min(dep.post_to_started) * 1000:.0f}–{worst * 1000:.0f} | "
                     f"{', '.join(f'{s * 1000:.0f}' for s in dep.post_to_started)} | "
                     f"{', '.join(f'{s * 1000:.0f}' for s in dep.post_to_received)} | "
                     f"{statistics.median(dep.post_to_seen) * 1000:.0f} | {statistics.median(dep.finish_s):.1f} |")
        if dep.broker == "redis":
            verdict.append(f"- redis: median {med * 1000:.0f} ms, max {worst * 1000:.0f} ms (target < {TARGET_REDIS_S:.0f} s): "
                           f"**{'PASS' if worst < TARGET_REDIS_S else ('PASS (median; max over)' if med < TARGET_REDIS_S else 'FAIL')}**")
    lines += ["", "Target:", "", *verdict,
              (f"- filesystem:// has no target; its consumer polls the queue folder every "
              f"{FILESYSTEM_POLLING_INTERVAL_S:g} s (`polling_interval` in store/queue.py's filesystem transport "
              f"options; kombu's default is 1 s), so expect up to ~{FILESYSTEM_POLLING_INTERVAL_S:g} s plus the claim.")]
    print("\n".join(lines[len(head):]))
    path = write_results("dispatch.md", lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
