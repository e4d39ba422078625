"""Keeps `xmodal up`'s one worker process running beside the API.

A worker that dies (the OOM killer, a crash, a stray `kill`) is started again, after a pause that
doubles while it keeps dying, so a worker that cannot start does not spin. Once `stop()` is called
nothing is restarted: shutdown stops the worker for good.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

log = logging.getLogger(__name__)

WORKER_STOP_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0
"""A worker that ran this long before it died was healthy: the next restart waits the first pause again."""


class WorkerSupervisor:
    """Runs `argv` as a process in its own session and restarts it whenever it exits, until `stop()`."""

    def __init__(self, argv: list[str], first_backoff: float = FIRST_BACKOFF_SECONDS,
                 max_backoff: float = MAX_BACKOFF_SECONDS, stable_after: float = STABLE_SECONDS) -> None:
        self._argv = argv
        self._first_backoff, self._max_backoff, self._stable_after = first_backoff, max_backoff, stable_after
        self._lock = threading.Lock()  # orders a restart against stop(): stop() never misses a new process
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._watch, name="xmodal-worker-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self._process = self._spawn()
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising, then stop the current worker (and its job processes)."""
        with self._lock:
            self._stopping.set()
        if self._process is not None:
            stop_worker(self._process)
        if self._thread.is_alive():
            self._thread.join()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Its own session: a Ctrl-C reaches only `up`, which then stops the worker (and its pool).
        return subprocess.Popen(self._argv, start_new_session=True)

    def _watch(self) -> None:
        backoff = self._first_backoff
        while True:
            assert self._process is not None
            started = time.monotonic()
            returncode = self._process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self._stable_after:
                backoff = self._first_backoff
            log.warning("xmodal up: the worker (pid %d) exited with %s; starting another in %.0f s",
                        self._process.pid, returncode, backoff)
            if self._stopping.wait(backoff):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
            log.warning("xmodal up: started worker pid %d", self._process.pid)
            backoff = min(2 * backoff, self._max_backoff)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Ask the worker to finish (SIGTERM: it checkpoints running jobs and hands them back), then kill
    its whole process group. A job cut short by the kill is re-queued when its lease lapses and
    resumes from its last checkpoint."""
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait()
