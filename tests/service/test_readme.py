"""The README's two flows, run as written, so the README cannot drift from the code again.

Blocks marked `<!-- readme-test: NAME -->` are cut out of README.md and run with bash in an
empty working directory with no `XMODAL_*` variable set, as a new user runs them after
`make run`: the service on its embedded defaults (a relative `./var`), the first key as printed.
A job that fails on those defaults (as every job once did) breaks the download and this test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.api_fixtures import auth, free_port, wait_until_up

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
VENV_BIN = Path(sys.executable).parent  # what `. .venv/bin/activate` puts first on PATH
MARKED_BLOCK = re.compile(r"<!-- readme-test: (?P<name>[^>]+?) -->\n```\w+\n(?P<body>.*?)```\n", re.S)
FLOW_SECONDS = 900


def readme_blocks() -> dict[str, str]:
    return {match["name"]: match["body"] for match in MARKED_BLOCK.finditer(README.read_text())}


def new_user_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("XMODAL_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    return env


def run_bash(script: str, cwd: Path) -> str:
    """Run a README block the way a terminal would, but stop at its first failing command."""
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=new_user_env(),
                            capture_output=True, text=True, timeout=FLOW_SECONDS)
    assert result.returncode == 0, (f"README block failed (exit {result.returncode})\n--- stdout\n"
                                    f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result.stdout


def replace_once(script: str, pattern: str, replacement: str) -> str:
    """Fill in what the README leaves to the reader; the line must be there exactly once."""
    filled, count = re.subn(pattern, replacement, script, flags=re.M)
    assert count == 1, f"README block should have one line matching {pattern!r}, found {count}"
    return filled


def printed_key(log: Path, process: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The first key as `xmodal up` prints it (`API key: xm-…`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"^API key: (\S+)", log.read_text(), re.M)
        if found:
            return found[1]
        assert process.poll() is None, f"xmodal up exited with {process.returncode}:\n{log.read_text()}"
        time.sleep(0.1)
    raise TimeoutError(f"xmodal up printed no key within {timeout}s:\n{log.read_text()}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """`xmodal up` in an empty folder with no XMODAL_* variable; yields (url, first key, folder)."""
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    log = tmp_path / "up.log"  # a file, not a pipe: its access log would fill an unread pipe and stall it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen([str(VENV_BIN / "xmodal"), "up", "--port", str(port)], cwd=workdir,
                                   env=new_user_env(), stdout=output, stderr=subprocess.STDOUT)
    try:
        key = printed_key(log, process)
        wait_until_up(url, process)
        yield url, key, workdir
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def test_the_readme_service_flow_runs_as_written_on_the_embedded_defaults(up: tuple[str, str, Path]) -> None:
    url, key, workdir = up
    script = readme_blocks()["service"]
    script = replace_once(script, r"^KEY=xm-\.\.\.", f"KEY={key}")
    script = replace_once(script, r"^URL=http://127\.0\.0\.1:8000$", f"URL={url}")

    printed = run_bash(script, workdir)

    # curl prints JSON without a newline, so the predict line's output ends the last line
    predictions = re.search(r"\[([\d\s]+)\]\s*$", printed)
    assert predictions, f"the output should end with the predict line's ten classes: {printed[-300:]!r}"
    assert len(predictions[1].split()) == 10 and set(predictions[1].split()) <= {"0", "1"}
    (job,) = httpx.get(f"{url}/v1/fine_tuning/jobs", headers=auth(key)).json()["data"]
    assert job["status"] == "succeeded", job
    assert (workdir / "var" / "xmodal.db").is_file()  # the relative default, not a test's absolute dir
    assert (workdir / "ckpt" / "model.safetensors").is_file()


def test_the_readme_train_flow_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks()
    (tmp_path / "job.yaml").write_text(blocks["train job.yaml"])

    run_bash(blocks["train"], tmp_path)

    with np.load(tmp_path / "dna.npz") as data:
        samples = len(data["x"])
    assert np.load(tmp_path / "p.npy").shape == (samples,)
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "checkpoint").is_dir()
