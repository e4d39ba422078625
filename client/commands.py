"""`xmodal files …` and `xmodal jobs …`: the API from a terminal, through `client.Client`.

Every command takes `--base-url`, `--api-key` (or XMODAL_BASE_URL / XMODAL_API_KEY) and `--json`
(the result as JSON on stdout, for scripts). Progress goes to stderr. A failure prints one line
naming the problem and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from client.client import Client
from client.display import StatusLine, human_bytes, job_line, outcome
from client.errors import XModalClientError
from client.types import Job

Handler = Callable[[Client, argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-url", help="the API's URL (default: $XMODAL_BASE_URL, else http://127.0.0.1:8000)")
    common.add_argument("--api-key", help="an API key (default: $XMODAL_API_KEY, which keeps it out of `ps`)")
    common.add_argument("--json", action="store_true", help="print the result as JSON")

    def command(group: argparse._SubParsersAction, name: str, handler: Handler,  # type: ignore[type-arg]
                help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, help=help, parents=[common])
        parser.set_defaults(func=lambda args: _run(handler, args))
        return parser

    files = subparsers.add_parser("files", help="upload and list datasets on an xmodal server")
    file_commands = files.add_subparsers(dest="files_command", required=True)
    upload = command(file_commands, "upload", _files_upload, "upload an .npz dataset (validated by the server)")
    upload.add_argument("path", metavar="PATH")
    upload.add_argument("--purpose", default="fine-tune", help="default: fine-tune")
    listing = command(file_commands, "list", _files_list, "list your files, newest first")
    _add_paging(listing)
    command(file_commands, "get", _files_get, "show one file").add_argument("file_id", metavar="ID")
    command(file_commands, "delete", _files_delete, "delete a file (jobs using it keep their data)"
            ).add_argument("file_id", metavar="ID")

    jobs = subparsers.add_parser("jobs", help="submit, follow and download fine-tuning jobs on an xmodal server")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    create = command(job_commands, "create", _jobs_create, "submit a fine-tuning job")
    create.add_argument("--training-file", required=True, metavar="FILE_ID")
    create.add_argument("--model", help="body: minilm-l6, tiny-bert, a model directory or hub name "
                                        "(default: body.name in --config)")
    create.add_argument("--method", help="orca, pare, mona, contrastive_pare, finetune (default: method in "
                                         "--config, else orca)")
    create.add_argument("--config", type=Path, metavar="JOB_YAML",
                        help="a job file as for `xmodal train` (YAML or .json): its sections become the method's")
    create.add_argument("--seed", type=int)
    create.add_argument("--validation-file", metavar="FILE_ID")
    create.add_argument("--suffix")
    listing = command(job_commands, "list", _jobs_list, "list your jobs, newest first")
    _add_paging(listing)
    listing.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    command(job_commands, "get", _jobs_get, "show one job").add_argument("job_id", metavar="ID")
    command(job_commands, "cancel", _jobs_cancel, "cancel a job").add_argument("job_id", metavar="ID")
    watch = command(job_commands, "watch", _jobs_watch,
                    "follow a job until it finishes: exit 0 if it succeeded, 1 if it failed or was cancelled")
    watch.add_argument("job_id", metavar="ID")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default: 2)")
    download = command(job_commands, "download", _jobs_download,
                       "download a checkpoint tar (resumes an interrupted download; checks its sha256)")
    download.add_argument("job_id", metavar="ID")
    download.add_argument("--checkpoint", metavar="CHECKPOINT_ID", help="default: the job's final checkpoint")
    download.add_argument("-o", "--output", type=Path, default=Path("."),
                          help="file or directory (default: ./<checkpoint id>.tar)")
    download.add_argument("--no-resume", dest="resume", action="store_false",
                          help="start over instead of continuing a partial <output>.part")


def _add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, help="page size (default: the server's, 20)")
    parser.add_argument("--after", metavar="ID", help="the last id of the previous page")


def make_client(args: argparse.Namespace) -> Client:
    return Client(args.base_url, args.api_key)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """The edge: client errors and local file errors become one line on stderr and exit 1."""
    try:
        with _retries_shown(), make_client(args) as client:
            return handler(client, args)
    except XModalClientError as exc:
        print(f"xmodal: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"xmodal: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
              file=sys.stderr)
    return 1


@contextmanager
def _retries_shown() -> Iterator[None]:
    """The client logs each retry at INFO; a person waiting out a 60 s Retry-After should see why."""
    log = logging.getLogger("xmodal.client")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("xmodal: %(message)s"))
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _files_upload(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.files.upload(args.path, args.purpose))


def _files_list(client: Client, args: argparse.Namespace) -> int:
    page = client.files.list(after=args.after, limit=args.limit)
    rows = [(f.id, f.filename, human_bytes(f.bytes), f.status, _when(f.created_at)) for f in page.data]
    return _show_list(args, page, ("ID", "FILENAME", "SIZE", "STATUS", "CREATED"), rows)


def _files_get(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.files.get(args.file_id))


def _files_delete(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.files.delete(args.file_id))


def _jobs_create(client: Client, args: argparse.Namespace) -> int:
    sections = _read_config(args.config) if args.config else {}
    kind = args.method or sections.pop("method", None) or "orca"
    sections.pop("method", None)
    model = args.model or (sections.get("body") or {}).get("name")
    if not model:
        raise XModalClientError("no model: pass --model (or give body.name in --config)")
    job = client.jobs.create(args.training_file, model, {"type": kind, kind: sections}, seed=args.seed,
                             validation_file=args.validation_file, suffix=args.suffix)
    return _show(args, job)


def _read_config(path: Path) -> dict[str, Any]:
    """A job file's sections. YAML needs PyYAML, imported only here: the client itself is httpx only."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise XModalClientError(f"{path}: not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise XModalClientError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise XModalClientError(f"{path}: expected a mapping of config sections")
    return data


def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    page = client.jobs.list(after=args.after, limit=args.limit, status=args.status)
    rows = [(j.id, j.status, j.model, str(j.method.get("type")), _progress(j), _when(j.created_at)) for j in page.data]
    return _show_list(args, page, ("ID", "STATUS", "MODEL", "METHOD", "PROGRESS", "CREATED"), rows)


def _progress(job: Job) -> str:
    progress = job.progress
    if progress is None or not progress.total_steps:
        return "-"
    return f"{progress.stage or ''} {progress.step}/{progress.total_steps}".strip()


def _jobs_get(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.jobs.get(args.job_id))


def _jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.jobs.cancel(args.job_id))


def _jobs_watch(client: Client, args: argparse.Namespace) -> int:
    line = StatusLine(sys.stderr)
    loss = _LatestLoss(client, args.job_id)
    try:
        job = client.jobs.wait(args.job_id, poll_interval=args.interval,
                               on_update=lambda job: line.update(job_line(job, loss.update(job))))
    finally:
        line.close()
    if args.json:
        _print_json(job)
    else:
        print(outcome(job))
    return 0 if job.status == "succeeded" else 1


class _LatestLoss:
    """The newest train loss, fetching only the points written since the last poll."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client, self.job_id = client, job_id
        self.after: int | None = None
        self.value: float | None = None

    def update(self, job: Job) -> float | None:
        if job.status != "queued":
            for point in self.client.jobs.iter_metrics(self.job_id, key="loss", split="train", after=self.after):
                self.after, self.value = point.id, point.value
        return self.value


def _jobs_download(client: Client, args: argparse.Namespace) -> int:
    line = StatusLine(sys.stderr)

    def show(done: int, total: int | None) -> None:
        size = f"{human_bytes(done)} / {human_bytes(total)} {done / total:.0%}" if total else human_bytes(done)
        line.update(f"downloading {size}")

    try:
        result = client.jobs.download(args.job_id, args.checkpoint, args.output, resume=args.resume,
                                      on_progress=show if line.live else None)
    finally:
        line.close()
    if args.json:
        _print_json(result)
    else:
        resumed = f", resumed at {human_bytes(result.resumed_from)}" if result.resumed_from else ""
        print(f"{result.path} ({human_bytes(result.bytes)}, sha256 {result.sha256[:12]}… verified{resumed})")
    return 0


def _show(args: argparse.Namespace, item: Any) -> int:
    """One object: JSON, or its non-empty fields one per line."""
    if args.json:
        _print_json(item)
        return 0
    for name, value in dataclasses.asdict(item).items():
        if value is None or value == {}:
            continue
        if isinstance(value, dict):
            value = json.dumps(value, default=str)
        elif name.endswith("_at"):
            value = _when(value)
        print(f"{name}: {value}")
    return 0


def _show_list(args: argparse.Namespace, page: Any, header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    if args.json:
        _print_json(page)
        return 0
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if page.has_more:
        print(f"(more: --after {page.last_id})")
    return 0


def _print_json(item: Any) -> None:
    print(json.dumps(dataclasses.asdict(item), indent=2, default=str))


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")
