"""``traitstream migrate``: create the database if missing and apply migrations."""

from __future__ import annotations

import argparse

from traitstream import logs
from traitstream.commands.options import Commands, add_command, settings_from
from traitstream.config import CommonSettings


def register(commands: Commands) -> None:
    add_command(
        commands, "migrate", "create the database if missing and apply migrations", CommonSettings, run
    )


def run(args: argparse.Namespace) -> int:
    from traitstream.store.database import migrate

    settings = settings_from(args, CommonSettings)
    logs.setup(settings.log_format, settings.log_level)
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "the database is up to date")
    return 0
