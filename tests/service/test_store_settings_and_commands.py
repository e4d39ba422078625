"""Settings from the environment, the store's CLI commands, and the queue producer's config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from store import commands
from store.db import session_scope
from store.queue import broker_config
from store.repositories import keys
from store.settings import Settings


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
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        Settings(lease_seconds=5, heartbeat_seconds=10)


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
