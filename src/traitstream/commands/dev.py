"""``traitstream dev``: the whole local pipeline, supervised (``devstack``)."""

from __future__ import annotations

import argparse

from traitstream import logs
from traitstream.commands.options import Commands, add_command, settings_from
from traitstream.config import DevSettings


def register(commands: Commands) -> None:
    dev = add_command(
        commands, "dev", "run the whole local pipeline (broker, migrations, edge, workers)", DevSettings, run
    )
    dev.add_argument("--api-key", dest="setting_dev_api_key", default=None, help="alias of --dev-api-key")


def run(args: argparse.Namespace) -> int:
    from traitstream import devstack

    settings = settings_from(args, DevSettings)
    logs.setup(settings.log_format, settings.log_level)
    return devstack.run(settings)
