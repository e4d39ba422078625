"""`xmodal serve` (the HTTP API) and `xmodal up` (API + one worker on one machine, no setup)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from api.metrics_dir import prometheus_multiprocess_dir
from api.supervisor import WorkerSupervisor

if TYPE_CHECKING:
    from store.settings import Settings

FIRST_KEY_FILE = "first-key.txt"
LOCAL_OWNER = "local"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("serve", help="run the HTTP API (migrates the database first)")
    _add_bind_arguments(serve)
    serve.add_argument("--workers", type=_positive_int, default=1,
                       help="API worker processes (uvicorn --workers; default: 1). One process serves about "
                            "one core (the GIL); give it more on a busy API. Requests share nothing in memory, "
                            "so any process can answer any request")
    serve.set_defaults(func=_serve)
    up = subparsers.add_parser(
        "up", help="one machine, no setup: migrate, make a first API key, run a worker (restarted if it dies) "
                   "and the API (SQLite + filesystem broker under ./var unless XMODAL_* variables say otherwise)")
    _add_bind_arguments(up)
    up.set_defaults(func=_up)


def _add_bind_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _prepare() -> Settings:
    """Migrate the database and clear what uploads cut short by a crash left in the blob store."""
    from migrations import upgrade
    from store.blobs import blob_store
    from store.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    blobs = blob_store(settings)
    removed = blobs.remove_stale_temp_files()
    if removed:
        print(f"removed {removed} unfinished blob write(s) from {blobs.temp_location}", file=sys.stderr)
    return settings


def _run_api(host: str, port: int, workers: int = 1) -> None:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from store.logs import json_logging_config
    from store.settings import get_settings

    # uvicorn applies log_config in every worker process; json also takes over its access and error logs.
    log_config = (json_logging_config(loggers=tuple(LOGGING_CONFIG["loggers"]))
                  if get_settings().log_format == "json" else LOGGING_CONFIG)
    # An import string (not an app object): with workers > 1 each process imports and builds its own app.
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers, log_config=log_config)


def _serve(args: argparse.Namespace) -> int:
    # Set before anything imports prometheus_client: it picks its storage at import time.
    with prometheus_multiprocess_dir():
        _prepare()  # once, here, before any worker process starts
        signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the directory is removed on SIGTERM too
        _run_api(args.host, args.port, args.workers)
    return 0


def _up(args: argparse.Namespace) -> int:
    settings = _prepare()
    url = f"http://{args.host}:{args.port}"
    key = first_key(settings)
    key_file = settings.data_dir / FIRST_KEY_FILE
    print(f"xmodal is up at {url} (docs: {url}/docs)", flush=True)
    if key is not None:
        print(f"API key: {key}\n  (kept in {key_file}, readable only by you; delete that file once the key is saved)",
              flush=True)
    else:
        print("API key: printed on first start; make another with `xmodal keys create --owner NAME`", flush=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it still reaches `finally`.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker = WorkerSupervisor([sys.executable, "-m", "cli.main", "worker"])
    worker.start()
    try:
        _run_api(args.host, args.port)
    finally:
        worker.stop()
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def first_key(settings: Settings) -> str | None:
    """On a database without keys, create one for owner `local` and keep its plaintext in
    `data_dir/first-key.txt` (mode 0600) so a restart can show it again; otherwise read that file."""
    from sqlalchemy import func, select

    from store.db import session_scope
    from store.models import ApiKey
    from store.repositories import keys

    key_file = settings.data_dir / FIRST_KEY_FILE
    with session_scope() as session:
        if not session.scalar(select(func.count()).select_from(ApiKey)):
            plaintext = keys.create_key(session, LOCAL_OWNER)
            _write_private(key_file, plaintext + "\n")  # inside the transaction: no file, no key
            return plaintext
    return key_file.read_text().strip() if key_file.is_file() else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        handle.write(text)
