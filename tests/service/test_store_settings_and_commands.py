"""Settings from the environment, the store's CLI commands, and the queue producer's config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store import commands
from store.db import session_scope
from store.queue import broker_config
from store.repositories import keys
from store.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xmodal")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_paths_follow_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XMODAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XMODAL_MODEL_ROOTS", f"{tmp_path}/a, {tmp_path}/b")
    monkeypatch.setenv("XMODAL_ALLOWED_HUB_MODELS", "roberta-base")
    s = Settings()
    assert s.database_url == f"sqlite:///{tmp_path}/xmodal.db"
    assert s.blob_root == tmp_path / "blobs" and s.broker_dir == tmp_path / "broker"
    assert s.model_roots == [tmp_path / "a", tmp_path / "b"] and s.allowed_hub_models == ["roberta-base"]


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ValueError, match="XMODAL_HEARTBEAT_SECONDS .* XMODAL_LEASE_SECONDS"):
        Settings(lease_seconds=5, heartbeat_seconds=10)


def test_relative_paths_are_anchored_at_the_working_directory_when_settings_load(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fails if any path setting stays relative: a job's symlink to a relative blob path dangles."""
    for name in [name for name in os.environ if name.startswith("XMODAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    defaults = Settings()
    assert defaults.data_dir == tmp_path / "var" and defaults.blob_root == tmp_path / "var" / "blobs"
    assert defaults.database_url == f"sqlite:///{tmp_path}/var/xmodal.db"
    assert defaults.work_dir == tmp_path / "var" / "work" and defaults.broker_dir.is_absolute()

    monkeypatch.setenv("XMODAL_DATABASE_URL", "sqlite:///db/x.db")
    monkeypatch.setenv("XMODAL_BLOB_DIR", "store")
    monkeypatch.setenv("XMODAL_MODEL_ROOTS", "models")
    relative = Settings()
    assert relative.database_url == f"sqlite:///{tmp_path}/db/x.db"
    assert relative.blob_root == tmp_path / "store" and relative.model_roots == [tmp_path / "models"]

    monkeypatch.setenv("XMODAL_DATABASE_URL", "postgresql+psycopg://u:p@h:5432/x")
    assert Settings().database_url == "postgresql+psycopg://u:p@h:5432/x"  # only SQLite names a file


@pytest.mark.parametrize("command", ["up", "serve", "worker"])
@pytest.mark.parametrize(("variable", "value", "rule"), [
    ("XMODAL_LEASE_SECONDS", "5", "XMODAL_HEARTBEAT_SECONDS (10) must be shorter than XMODAL_LEASE_SECONDS (5)"),
    ("XMODAL_MAX_ATTEMPTS", "0", "XMODAL_MAX_ATTEMPTS: Input should be greater than or equal to 1"),
])
def test_an_invalid_setting_is_one_line_and_exit_2(command: str, variable: str, value: str, rule: str,
                                                   tmp_path: Path) -> None:
    """Fails if the CLI lets pydantic's ValidationError (a multi-line traceback) reach the user."""
    env = {name: text for name, text in os.environ.items() if not name.startswith("XMODAL_")}
    result = subprocess.run([sys.executable, "-m", "cli.main", command], cwd=tmp_path, timeout=120,
                            env={**env, variable: value, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("xmodal: error: ") and rule in line
    assert not (tmp_path / "var").exists()  # refused before anything was created


def test_filesystem_broker_folders_are_created(settings: Settings) -> None:
    conf = broker_config(settings)
    folder = Path(conf["broker_transport_options"]["data_folder_in"])
    assert folder.is_dir() and folder.is_relative_to(settings.data_dir)
    assert conf["broker_transport_options"]["data_folder_out"] == str(folder)
    redis_conf = broker_config(Settings(data_dir=settings.data_dir, broker_url="redis://h:6379/0"))
    assert redis_conf["broker_transport_options"]["visibility_timeout"] >= 3600


def test_db_upgrade_creates_a_fresh_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from store.db import dispose_engines
    from store.settings import reset_settings

    monkeypatch.setenv("XMODAL_DATA_DIR", str(tmp_path / "fresh"))
    reset_settings()
    try:
        assert _run(["db", "upgrade"]) == 0
        assert _run(["db", "upgrade"]) == 0  # already at head: nothing to do
        engine = create_engine(f"sqlite:///{tmp_path}/fresh/xmodal.db")
        assert {"jobs", "files", "owners", "alembic_version"} <= set(inspect(engine).get_table_names())
        engine.dispose()
    finally:
        dispose_engines()
        reset_settings()


def test_keys_create_prints_a_working_key_and_revoke_disables_it(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["keys", "create", "--owner", "carol"]) == 0
    plaintext = capsys.readouterr().out.strip()
    with session_scope() as s:
        owner = keys.authenticate(s, plaintext)
        assert owner is not None and owner.name == "carol"
    assert _run(["keys", "revoke", plaintext[:12]]) == 0
    with session_scope() as s:
        assert keys.authenticate(s, plaintext) is None
    assert _run(["keys", "revoke", "key-unknown"]) == 1
    assert "no key matches" in capsys.readouterr().err
