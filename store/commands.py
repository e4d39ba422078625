"""`xmodal db upgrade` and `xmodal keys create|revoke`: the operator's side of the store."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = subparsers.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate the database (XMODAL_DATABASE_URL) to the newest schema")
    upgrade.set_defaults(func=_db_upgrade)

    keys = subparsers.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create an API key for an owner (created if new); prints the key")
    create.add_argument("--owner", required=True, help="owner name")
    create.set_defaults(func=_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke an API key by id (key-…) or displayed prefix")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")
    revoke.set_defaults(func=_keys_revoke)


def _db_upgrade(args: argparse.Namespace) -> int:
    from migrations import upgrade
    from store.settings import get_settings

    url = get_settings().database_url
    upgrade(url)
    print(f"database at head: {_redacted(url)}", file=sys.stderr)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from store.db import session_scope
    from store.repositories import keys

    with session_scope() as session:
        plaintext = keys.create_key(session, args.owner)
    print(plaintext)
    print(f"API key for owner {args.owner!r} created; it is shown only this once.", file=sys.stderr)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from store.db import session_scope
    from store.repositories import keys

    try:
        with session_scope() as session:
            key = keys.revoke(session, args.key)
            key_id = key.id
    except keys.KeyNotFound as exc:
        print(f"xmodal: error: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {key_id}", file=sys.stderr)
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
