"""Under `make test` (XMODAL_TEST_REQUIRE_SERVICES=1) a PostgreSQL that refuses the login or a Redis
that does not answer fails the fixtures' tests; outside it they skip. Runs the real fixtures in a
child pytest on a two-test file, pointed at a role that does not exist and a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from tests.service.conftest import postgres_database_url, redis_url  # noqa: F401

def test_postgres(postgres_database_url):
    pass

def test_redis(redis_url):
    pass
"""
BAD_POSTGRES = "postgresql+psycopg://no_such_role_xmodal@127.0.0.1:5432"  # the server answers; the login is refused
BAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def run_probe(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {name: value for name, value in os.environ.items() if not name.startswith("XMODAL_")}
    env |= {"XMODAL_TEST_POSTGRES": BAD_POSTGRES, "XMODAL_TEST_REDIS": BAD_REDIS}
    if require is not None:
        env["XMODAL_TEST_REQUIRE_SERVICES"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_required_services_fail_on_a_refused_login_and_a_closed_port(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 errors" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert 'role "no_such_role_xmodal" does not exist' in done.stdout, done.stdout
    assert f"Redis not available at {BAD_REDIS}" in done.stdout, done.stdout


@pytest.mark.integration
def test_a_developer_run_skips_and_says_how_to_make_it_fail(tmp_path: Path) -> None:
    done = run_probe(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout and "XMODAL_TEST_REQUIRE_SERVICES=1" in done.stdout, done.stdout


def test_a_mistyped_switch_is_a_usage_error(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "yes")
    assert done.returncode != 0 and "passed" not in done.stdout and "skipped" not in done.stdout
    assert "XMODAL_TEST_REQUIRE_SERVICES must be 0 or 1, not 'yes'" in done.stdout + done.stderr
