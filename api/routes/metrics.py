"""`/metrics`: Prometheus text for scrapers. No API key, like /healthz: it shows counts and rates,
never ids or owners, but firewall it or put it behind the proxy's auth in production.

The job gauges are read from the database at scrape time by the process that answers (the rows
are the truth, so they are never summed across processes); the HTTP series are every API process's
together under `xmodal serve` (PROMETHEUS_MULTIPROC_DIR, api.observability), else this process's.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.metrics_dir import MULTIPROC_DIR
from store.db import TRANSIENT_ERRORS, session_scope
from store.models import JobStatus, utcnow
from store.repositories import fleet

log = logging.getLogger("xmodal.api")

router = APIRouter(tags=["health"])


class FleetCollector(Collector):
    """Jobs by status, queue depth, live leases, heartbeat age and training rate, from two queries."""

    def describe(self) -> list[Metric]:
        """Nothing up front: otherwise registering would run the queries, at import time."""
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with session_scope() as session:
                now = utcnow()
                counts = fleet.jobs_by_status(session)
                running = fleet.running_jobs(session, now)
        except TRANSIENT_ERRORS as exc:
            log.warning("metrics scrape could not read the database: %s", str(exc).splitlines()[0])
            yield GaugeMetricFamily("xmodal_database_up", "1 when this scrape could read the database", value=0)
            return
        yield GaugeMetricFamily("xmodal_database_up", "1 when this scrape could read the database", value=1)
        by_status = GaugeMetricFamily("xmodal_jobs", "Jobs by status", labels=["status"])
        for status in get_args(JobStatus):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("xmodal_queue_depth", "Jobs queued, waiting for a worker", value=counts.get("queued", 0))
        yield GaugeMetricFamily("xmodal_live_leases", "Running jobs whose worker keeps renewing its lease",
                                value=sum(job.lease_live for job in running))
        beats = [(now - job.heartbeat_at).total_seconds() for job in running if job.heartbeat_at is not None]
        yield GaugeMetricFamily("xmodal_oldest_heartbeat_age_seconds",
                                "Seconds since the stalest running job's last heartbeat; 0 when none runs",
                                value=max(beats, default=0.0))
        yield GaugeMetricFamily("xmodal_training_steps_per_second", "Training steps a second, all running jobs",
                                value=sum(job.steps_per_second or 0.0 for job in running))


FLEET = FleetCollector()
REGISTRY.register(FLEET)  # once per process: this module is imported once
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


def scrape_registry() -> CollectorRegistry:
    """With a multiprocess directory: every process's files, summed, plus the fleet gauges once;
    else this process's own registry."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return REGISTRY
    forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(FLEET)
    return registry


def forget_dead_processes(directory: Path) -> None:
    """Drop the live-only gauges (open streams) of API processes that are gone, crashed ones too;
    their counters stay, as counts of what they answered."""
    pids = {int(match[1]) for path in directory.glob("gauge_live*.db") if (match := _PID_IN_NAME.search(path.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, someone else's


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Sync on purpose: the collector's queries run on the thread pool, not the event loop."""
    return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)
