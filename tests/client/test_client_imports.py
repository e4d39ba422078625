"""DESIGN.md's layering: the client talks HTTP and imports none of the server's packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_client_and_its_commands_import_no_server_package() -> None:
    code = ("import sys, client, client.commands; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'store', 'api', 'worker', 'torch')))")
    repo = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_name_in_all_is_exported() -> None:
    """`from client import *` fails with AttributeError on a name listed in `__all__` but never imported."""
    namespace: dict[str, object] = {}
    exec("from client import *", namespace)
    import client

    assert sorted(set(namespace) - {"__builtins__"}) == sorted(client.__all__)
