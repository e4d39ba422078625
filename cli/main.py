"""`xmodal` entry point: collects each package's subcommands and translates errors once, at the edge.

Each package's `commands.py` exposes `register(subparsers)`; a subcommand sets `func(args) -> int`.
Subcommand modules import their heavy dependencies (torch, uvicorn, celery) inside `func`, so
`xmodal --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from core.errors import XModalError
from store.settings import SettingsError

COMMAND_MODULES = ("core.commands", "store.commands", "worker.commands", "api.commands", "client.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmodal", description="Cross-modal fine-tuning: library, service and client.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (XModalError, SettingsError) as exc:
        print(f"xmodal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xmodal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
