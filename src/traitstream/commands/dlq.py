"""``traitstream dlq replay``: send dead-lettered records back to the topic."""

from __future__ import annotations

import argparse

from traitstream import logs
from traitstream.commands.options import Commands, add_settings_flags, settings_from
from traitstream.config import CommonSettings


def register(commands: Commands) -> None:
    dlq = commands.add_parser("dlq", help="dead-letter topic tools")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    replay = dlq_commands.add_parser("replay", help="send dead-lettered records back to the topic")
    replay.add_argument(
        "--idle-seconds", type=float, default=5.0, help="stop after this long with nothing new"
    )
    replay.add_argument("--limit", type=int, default=None, help="replay at most this many records")
    add_settings_flags(replay, CommonSettings)
    replay.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from traitstream.worker.replay import replay

    settings = settings_from(args, CommonSettings)
    logs.setup(settings.log_format, settings.log_level)
    count = replay(settings, idle_s=args.idle_seconds, limit=args.limit)
    print(f"replayed {count} record(s) from {settings.dlq_topic} to {settings.topic}")
    return 0
