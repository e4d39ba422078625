"""The one Celery task. It carries only a job id; the row holds everything else."""

from __future__ import annotations

import logging

from celery import Task
from sqlalchemy.exc import OperationalError

from store.queue import RUN_JOB_TASK
from worker.app import celery_app
from worker.lifecycle import execute_job

log = logging.getLogger(__name__)


@celery_app.task(bind=True, name=RUN_JOB_TASK, ignore_result=True, autoretry_for=(OperationalError,),
                 retry_backoff=True, max_retries=8)
def run_job(self: Task, job_id: str) -> str:
    """Run a job to its end. The database being unreachable retries the message later; any other
    failure is already recorded on the job row by execute_job."""
    return execute_job(job_id, task_id=self.request.id)
