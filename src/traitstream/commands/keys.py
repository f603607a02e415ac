"""``traitstream keys create|list|revoke``: API keys, stored hashed."""

from __future__ import annotations

import argparse
import sys

from traitstream.commands.options import Commands, add_settings_flags, settings_from
from traitstream.config import CommonSettings


def register(commands: Commands) -> None:
    keys_parser = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("--workspace", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated scopes")
    create.add_argument("--website-id", default=None, help="DataFast website the key belongs to")
    create.add_argument("--prefix", default="ts_", help="key prefix, e.g. df_ or dft_ (default ts_)")
    create.add_argument("--description", default=None)
    listing = key_commands.add_parser("list", help="list keys (never the secrets)")
    listing.add_argument("--workspace", default=None)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for sub in (create, listing, revoke):
        add_settings_flags(sub, CommonSettings)
    keys_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import psycopg

    from traitstream.store import keys
    from traitstream.store.database import migrate

    settings = settings_from(args, CommonSettings)
    migrate(settings.database_url)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if args.keys_command == "create":
            try:
                scopes = keys.check_scopes([s.strip() for s in args.scopes.split(",") if s.strip()])
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            secret = keys.new_secret(args.prefix)
            key = keys.register(
                conn,
                secret,
                args.workspace,
                scopes,
                website_id=args.website_id,
                description=args.description,
            )
            print(secret)
            print(
                f"key id {key.key_id}, workspace {key.workspace_id}, scopes {','.join(sorted(scopes))}"
                " (the key is shown once; only its hash is stored)",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for info in keys.list_keys(conn, args.workspace):
                state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
                print(
                    f"{info.key.key_id}\t{info.key.workspace_id}\t{','.join(sorted(info.key.scopes))}"
                    f"\t{state}\t{info.description or ''}"
                )
        elif args.keys_command == "revoke":
            if not keys.revoke(conn, args.key_id):
                print(f"error: no active key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    return 0
