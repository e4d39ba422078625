"""Where a job GET spends its time: cProfile of a real uvicorn server under 50 concurrent clients.

    .venv/bin/python bench/profile_job_get.py [--clients 50] [--requests 3000] [--top 25] [--out NAME.md]

Set-up as bench/api.py (a fresh PostgreSQL database, Redis broker, no worker, jobs stay queued):
the server is this script in a child process running uvicorn (one process) with a cProfile
profiler in every thread, the event loop's and each thread-pool thread's (cProfile alone sees only
the thread that enabled it, and sync routes and dependencies run on the pool). The load is
bench/api.py's raw keep-alive clients sending `GET /v1/fine_tuning/jobs/{id}` for `--jobs` queued
jobs. The report lists the functions with the most own time and the most cumulative time, all
threads merged; profiling slows everything, so read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import UNLIMITED, _create_body, _load
from bench.service_common import (
    REPO,
    XMODAL,
    auth,
    child,
    create_key,
    free_port,
    header,
    percentile,
    postgres_database,
    redis_db,
    service_env,
    upload_tiny,
    wait_until_up,
    write_results,
)


def serve_profiled(port: int, stats_path: Path) -> None:
    """Run the API under uvicorn with every thread profiled; dump the merged stats when it stops."""
    import uvicorn

    profilers: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(*_: object) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with lock:
            profilers.append(profiler)
        profiler.enable()  # replaces this hook for the rest of the thread's life

    threading.setprofile(start_in_thread)
    main = cProfile.Profile(time.thread_time)
    profilers.append(main)
    main.enable()
    # uvicorn re-raises SIGTERM after its graceful shutdown: as SystemExit it still reaches `finally`.
    signal.signal(signal.SIGTERM, _exit)
    try:
        uvicorn.Server(uvicorn.Config("api.main:create_app", factory=True, port=port, log_level="warning")).run()
    except SystemExit:
        pass
    main.disable()
    stats = pstats.Stats(main)
    for profiler in profilers[1:]:
        profiler.create_stats()
        stats.add(profiler)
    stats.dump_stats(stats_path)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def table(stats: pstats.Stats, sort: str, top: int) -> list[str]:
    """The `top` rows of `stats` by `sort`, as a fenced block (pstats' own layout, paths shortened)."""
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(top)
    text = out.getvalue().replace(str(REPO) + "/", "").replace(str(Path(sys.prefix)) + "/", "")
    body = text[text.index("   ncalls"):].rstrip()
    return ["```", body, "```"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=100, help="queued jobs to GET at random")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="profile_job_get_run.md")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_profiled(args.serve, args.stats)
        return 0
    head = header("Profile of a job GET (cProfile, all threads, real uvicorn + PostgreSQL)", sys.argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xmodal-profile-")))
        broker = stack.enter_context(redis_db())
        database_url = stack.enter_context(postgres_database())
        key = create_key(database_url)
        port, stats_path = free_port(), tmp / "server.prof"
        env = service_env(tmp, database_url, broker, **UNLIMITED)
        proc = stack.enter_context(child([sys.executable, __file__, "--serve", str(port), "--stats", str(stats_path)],
                                          env, tmp / "server.log"))
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc)
        file_id = upload_tiny(url, key)
        job_ids = [httpx.post(f"{url}/v1/fine_tuning/jobs", headers=auth(key), json=_create_body(file_id),
                              timeout=30).raise_for_status().json()["id"] for _ in range(args.jobs)]
        latencies, errors, t0, t1, _ = asyncio.run(_load(url, key, "get", file_id, job_ids, args.clients,
                                                         args.requests, time.time(), "raw"))
        proc.process.terminate()  # uvicorn stops gracefully; the child then writes the stats
        proc.process.wait(60)
        if not stats_path.exists():
            raise RuntimeError(f"the profiled server wrote no stats:\n{proc.tail()}")
        stats = pstats.Stats(str(stats_path))
    summary = (f"{args.requests} GETs over {args.clients} connections ({args.jobs} queued jobs) after "
               f"{args.jobs} creates and one upload (those are in the profile too): {errors} errors, "
               f"{args.requests / (t1 - t0):.0f} req/s under the profiler, p50 {percentile(latencies, 50):.1f} ms, "
               f"p99 {percentile(latencies, 99):.1f} ms.")
    lines = [*head, summary, "", f"## Top {args.top} by own time (tottime)", "",
             *table(stats, "tottime", args.top), "", f"## Top {args.top} by cumulative time", "",
             *table(stats, "cumulative", args.top)]
    print("\n".join(lines[len(head):]))
    print(f"wrote {write_results(args.out, lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
