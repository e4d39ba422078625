"""A small upload that declares gigabytes is refused by a real server without the server growing
(issue 12, finding 3): 1.5 MB with y of shape (1, 2e8) float64 zeros was `processed` with
200,000,000 classes while the API peaked at 2764 MiB."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from store.settings import Settings
from tests.core.bad_datasets import zeros_archive
from tests.service.api_fixtures import assert_error, free_port, running, upload, wait_until_up
from tests.service.conftest import OwnerKey

pytestmark = pytest.mark.integration
MiB = 2**20


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_target_bomb_is_refused_with_param_y(settings: Settings, owner_key: OwnerKey, tmp_path: Path) -> None:
    """The red-team upload at a quarter of its size (400 MB of y in 1.7 MB): 400 invalid_dataset
    naming y, and the server's peak RSS grows by less than 100 MiB."""
    bomb = tmp_path / "bomb.npz"
    zeros_archive({"x": ("<f4", (1, 1, 16)), "y": ("<f8", (1, 50_000_000))})(bomb)
    assert bomb.stat().st_size < 2 * MiB
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port)]
    with running(command, tmp_path / "server.log") as server, httpx.Client(base_url=url, timeout=60) as http:
        wait_until_up(url, server)
        before = peak_rss_mib(server.pid)
        error = assert_error(upload(http, owner_key.key, bomb.read_bytes()), 400, "invalid_dataset", "y")
        grown = peak_rss_mib(server.pid) - before
    assert "50000000 values per sample" in error["message"], error
    assert grown < 100, f"the server's peak RSS grew by {grown:.0f} MiB"
