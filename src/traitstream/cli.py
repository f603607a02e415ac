"""The ``traitstream`` command. Every setting is an environment variable and a flag.

Each subcommand is a module of ``traitstream.commands``: its ``register`` adds the
parser, and the function it names runs the command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from traitstream.commands import bench, changes, dev, dlq, edge, keys, migrate, worker

COMMANDS = (dev, edge, worker, migrate, keys, dlq, changes, bench)
"""In the order ``traitstream --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="traitstream", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
