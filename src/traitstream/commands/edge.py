"""``traitstream edge``: the HTTP edge (``edge.server``)."""

from __future__ import annotations

import argparse
import os

from traitstream import logs
from traitstream.commands.options import Commands, add_command, given_settings, settings_from
from traitstream.config import EdgeSettings


def register(commands: Commands) -> None:
    add_command(commands, "edge", "run the HTTP edge", EdgeSettings, run)


def run(args: argparse.Namespace) -> int:
    from traitstream.edge import server

    settings = settings_from(args, EdgeSettings)
    logs.setup(settings.log_format, settings.log_level)
    # Several processes build their apps from the environment: the flags given
    # here travel to them as the variables they stand for.
    for name, value in given_settings(args).items():
        os.environ[f"TRAITSTREAM_{name.upper()}"] = str(value)
    server.serve(settings)
    return 0
