"""``traitstream changes tail``: print the profile changes topic as JSON lines."""

from __future__ import annotations

import argparse

from traitstream import logs
from traitstream.commands.options import Commands, add_settings_flags, settings_from
from traitstream.config import CommonSettings


def register(commands: Commands) -> None:
    changes = commands.add_parser("changes", help="profile changes topic tools")
    sub = changes.add_subparsers(dest="changes_command", required=True)
    tail = sub.add_parser("tail", help="print profile changes as JSON lines until interrupted")
    tail.add_argument("--workspace", default=None, help="only this workspace's profiles")
    tail.add_argument(
        "--from-beginning", action="store_true", help="from the oldest record kept, not from now"
    )
    add_settings_flags(tail, CommonSettings)
    tail.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from traitstream import changes_tail

    settings = settings_from(args, CommonSettings)
    logs.setup(settings.log_format, settings.log_level)
    return changes_tail.run(settings, workspace=args.workspace, from_beginning=args.from_beginning)
