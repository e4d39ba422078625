"""Celery wiring and the lease reaper (no worker process needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from store.db import session_scope
from store.models import Job
from store.queue import GPU_QUEUE, RUN_JOB_TASK
from store.repositories import jobs
from store.settings import Settings
from tests.service.test_worker import load, submit
from worker import commands, reaper


def test_app_runs_one_job_per_process_and_acks_late() -> None:
    from worker.app import celery_app

    conf = celery_app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1 and conf.worker_max_tasks_per_child == 1
    assert conf.task_default_queue == GPU_QUEUE
    celery_app.loader.import_default_modules()  # what a starting worker does with `include`
    assert RUN_JOB_TASK in celery_app.tasks


def test_worker_command_parses_its_options() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["worker", "--queues", "gpu,cpu", "--concurrency", "2", "--loglevel", "debug"])
    assert (args.queues, args.concurrency, args.loglevel) == ("gpu,cpu", 2, "debug")


def test_sweep_requeues_an_expired_job_and_sends_a_wakeup(settings: Settings) -> None:
    _, job_id = submit(settings)
    with session_scope() as s:
        jobs.claim(s, job_id, "dead", lease_seconds=-1)
    sweep = reaper.sweep_once(settings)
    assert sweep.requeued == [job_id] and load(job_id).status == "queued"
    queue = Path(settings.broker_dir) / "queue"
    messages = [p.read_text() for p in queue.iterdir()]
    assert len(messages) == 1 and job_id in messages[0] and RUN_JOB_TASK in messages[0]
    assert reaper.sweep_once(settings).requeued == []  # nothing left to recover


def test_sweep_leaves_live_leases_alone(settings: Settings) -> None:
    _, job_id = submit(settings)
    with session_scope() as s:
        jobs.claim(s, job_id, "alive", lease_seconds=60)
    assert reaper.sweep_once(settings).requeued == []
    with session_scope() as s:
        assert s.get(Job, job_id).lease_owner == "alive"  # type: ignore[union-attr]
