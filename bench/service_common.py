"""Shared helpers for the service benchmarks (`bench/api.py`, `bench/dispatch.py`, `bench/upload.py`,
`bench/load.py`):
a fresh PostgreSQL database, a Redis db number, `xmodal serve` / `xmodal worker` as real child
processes, an API key, a tiny dataset, process RSS from /proc, and the results-file header.

No torch here (unlike `bench/common.py`): the client side of these benchmarks should stay light.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import platform
import re
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
XMODAL = [sys.executable, "-m", "cli.main"]
POSTGRES_SERVER = os.environ.get("XMODAL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("XMODAL_BENCH_REDIS", "redis://127.0.0.1:6379")
# Redis db numbers the benchmarks may use (the tests use 13); the first empty one is taken.
REDIS_DBS = (7, 6, 5, 4)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------- databases


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database; dropped afterwards. Yields its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text

    from migrations import upgrade

    name = f"xmodal_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_SERVER}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from store.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_database(data_dir: Path) -> str:
    """A migrated SQLite file under `data_dir` (where `xmodal serve` would put it by default)."""
    from migrations import upgrade

    url = f"sqlite:///{data_dir / 'xmodal.db'}"
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    return url


@contextmanager
def redis_db() -> Iterator[str]:
    """A Redis URL on an empty db number (flushed afterwards; only a db that was empty is used)."""
    import redis

    for number in REDIS_DBS:
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{number}")
        if client.dbsize() == 0:
            try:
                yield f"{REDIS_SERVER}/{number}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError(f"no empty Redis db among {REDIS_DBS} at {REDIS_SERVER}")


def create_key(database_url: str, owner: str = "bench") -> str:
    """An API key for `owner` in the (migrated) database; returns the plaintext."""
    from store.db import session_scope
    from store.repositories import keys

    with session_scope(database_url) as session:
        return keys.create_key(session, owner)


# ---------------------------------------------------------------------------------- processes


def service_env(data_dir: Path, database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The current environment minus any XMODAL_* setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMODAL_")}
    env.update(XMODAL_DATA_DIR=str(data_dir), XMODAL_DATABASE_URL=database_url, XMODAL_BROKER_URL=broker_url)
    env.update({f"XMODAL_{k.upper()}": v for k, v in extra.items()})
    return env


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def child(command: list[str], env: dict[str, str], log: Path) -> Iterator[Proc]:
    """A child process in its own session, logging to `log`; SIGTERM then SIGKILL of its group at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield Proc(process, log)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(process.pid, 9)  # the worker's pool children, if any are left
            except ProcessLookupError:
                pass
            process.wait()


def wait_until_up(url: str, proc: Proc, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"server exited with {proc.process.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout}s:\n{proc.tail()}")


STATS_SETTLE_S = 11.0
"""PostgreSQL publishes an idle backend's counts up to 10 s late: wait this long before reading them."""


def pg_activity(database_url: str) -> dict[str, int]:
    """PostgreSQL's own counters for one database (pg_stat_database): `sessions` established and
    `transactions` (commits + rollbacks), read over a connection to another database so the reading
    is not counted. An idle backend's counts can arrive up to 10 s late."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(f"{POSTGRES_SERVER}/postgres")
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT sessions, xact_commit + xact_rollback FROM pg_stat_database "
                                    "WHERE datname = :n"), {"n": make_url(database_url).database}).one()
        return {"sessions": int(row[0]), "transactions": int(row[1])}
    finally:
        engine.dispose()


@contextmanager
def serve(env: dict[str, str], log: Path, workers: int = 1) -> Iterator[tuple[str, Proc]]:
    """`xmodal serve` on a free port; yields (url, proc). With one worker the uvicorn process is the
    child itself; with more, the child is uvicorn's supervisor and the workers are its children."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--workers", str(workers)] if workers != 1 else []
    with child([*XMODAL, "serve", "--port", str(port), *extra], env, log) as proc:
        wait_until_up(url, proc)
        yield url, proc


@contextmanager
def worker(env: dict[str, str], log: Path, concurrency: int = 1) -> Iterator[Proc]:
    """`xmodal worker` (Celery prefork, `concurrency` jobs at once, one job per child)."""
    with child([*XMODAL, "worker", "--loglevel", "info", "--concurrency", str(concurrency)], env, log) as proc:
        yield proc


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS from /proc; psutil is not installed here)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of `pid` from /proc/PID/stat; with `children`, plus that of its live child processes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if children:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += cpu_seconds(int(stat.parent.name))
            except (OSError, ValueError):
                pass  # gone meanwhile
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid`, of its children it has reaped (cutime + cstime) and of its live
    descendants. Unlike `cpu_seconds(pid, children=True)`, a child that ends between two readings
    (a worker's job process) still counts."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += tree_cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            pass  # gone meanwhile
    return total


# ---------------------------------------------------------------------------------- data, results


def tiny_npz(n: int = 32, length: int = 16, seed: int = 0) -> bytes:
    """x float32 (n, 1, length), y int64 0/1: the smallest dataset the API accepts."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.standard_normal((n, 1, length)).astype(np.float32),
             y=(np.arange(n) % 2).astype(np.int64))
    return buffer.getvalue()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload_tiny(url: str, key: str, data: bytes | None = None) -> str:
    """Upload `data` (default: `tiny_npz()`) as a fine-tune file; returns its id."""
    response = httpx.post(f"{url}/v1/files", headers=auth(key), files={"file": ("tiny.npz", data or tiny_npz())},
                          data={"purpose": "fine-tune"}, timeout=30)
    response.raise_for_status()
    return str(response.json()["id"])


ACCESS_5XX = re.compile(r'"([A-Z]+ [^\s?]+)\S* HTTP/[\d.]+" (5\d\d [^"]*)$')
"""A uvicorn access-log line of a 5xx answer: (method and path without the query, status)."""


def log_problems(log: Path) -> list[tuple[int, str]]:
    """The distinct failures in a child's log, most frequent first, as (count, excerpt). A traceback
    is keyed by its exception line and shown as its frames outside site-packages and the standard
    library, its last frame and the exception; a uvicorn access line of a 5xx answer by request and
    status, and a WARNING/ERROR/CRITICAL line by its text, both with resource ids (`ftjob-...`) masked."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found: dict[str, tuple[int, str]] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback"):
            end = i + 1
            while end < len(lines) and (lines[end].startswith(" ") or not lines[end]):
                end += 1
            frames = [j for j in range(i + 1, end) if lines[j].startswith('  File "')]
            shown = [j for j in frames if not any(lib in lines[j] for lib in ("site-packages", "/lib/python3", '"<'))]
            shown += [frames[-1]] if frames and frames[-1] not in shown else []
            body = [text for j in shown for text in lines[j:j + 2]]
            key = lines[end] if end < len(lines) else "(log ends inside a traceback)"
            excerpt = "\n".join([line, *body, key])
            i = end + 1
        elif (access := ACCESS_5XX.search(line)) is not None:
            key = excerpt = re.sub(r"\b([a-z]+)-[a-z0-9]{16,}\b", r"\1-<id>", f"{access[1]} -> {access[2]}")
            i += 1
        elif any(level in line for level in ("ERROR", "CRITICAL", "WARNING")):
            excerpt = re.sub(r"^\[[^\]]*\]\s*", "", line)  # Celery's [time: LEVEL/process] prefix
            key = re.sub(r"\b([a-z]+)-[a-z0-9]{16,}\b", r"\1-<id>", excerpt)  # one entry for all jobs' lines
            i += 1
        else:
            i += 1
            continue
        count, first = found.get(key, (0, excerpt))
        found[key] = (count + 1, first)
    return sorted(found.values(), key=lambda item: -item[0])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_note() -> str:
    load = os.getloadavg()
    return (f"python {platform.python_version()}, {os.cpu_count()} CPUs visible, load average "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min) at start, commit {git_commit()}")


def header(title: str, argv: list[str]) -> list[str]:
    command = ".venv/bin/python " + " ".join(shlex.quote(a) for a in [os.path.relpath(argv[0], REPO), *argv[1:]])
    return [f"# {title}", "", f"Command: `{command}`  ", f"Date: {dt.datetime.now().isoformat(timespec='seconds')}  ",
            f"Machine: {machine_note()}", ""]


def write_results(name: str, lines: list[str]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text("\n".join(lines) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(np.ceil(q / 100 * len(ordered)))))
    return ordered[rank - 1]


@contextmanager
def in_process_deployment(prefix: str, **settings: str) -> Iterator[str]:
    """For benches that call the app in this process: a temp data dir, an empty Redis db and a fresh
    migrated PostgreSQL database set as this process's service settings (plus `settings`); yields the
    database URL."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, redis_db() as broker, postgres_database() as url:
        os.environ.update(service_env(Path(tmp), url, broker, **settings))
        yield url


Rounds = list[tuple[float, float]]
"""Per round: (cpu ms, wall ms) per call."""


def median_cpu(rounds: Rounds) -> float:
    return statistics.median(cpu for cpu, _ in rounds)


def timing_row(cells: list[str], rounds: Rounds, reference_cpu: float) -> str:
    """A table row: `cells`, the median CPU and wall ms over rounds, the CPU as a ratio of
    `reference_cpu`, then every round's figures."""
    wall = statistics.median(wall for _, wall in rounds)
    per_round = ", ".join(f"{c:.3f} / {w:.3f}" for c, w in rounds)
    cpu = median_cpu(rounds)
    return "| " + " | ".join([*cells, f"{cpu:.3f}", f"{wall:.3f}", f"{cpu / reference_cpu:.2f}", per_round]) + " |"
