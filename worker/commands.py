"""`xmodal worker`: a Celery worker that runs fine-tuning jobs, one per child process."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("worker", help="run jobs from the queue (one worker per GPU)")
    parser.add_argument("--queues", default="gpu", help="comma-separated queues to consume (default: gpu)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="jobs at once; keep 1 per GPU and pin it with CUDA_VISIBLE_DEVICES")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from worker.app import celery_app

    # prefork + one task per child: each job gets a fresh process (a crash or SIGKILL takes one job,
    # which the lease reaper recovers), and the parent keeps consuming.
    celery_app.worker_main([
        "worker", "--pool", "prefork", "--concurrency", str(args.concurrency), "--queues", args.queues,
        "--loglevel", args.loglevel, "--max-tasks-per-child", "1", "--hostname", f"xmodal-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
    ])
    return 0
