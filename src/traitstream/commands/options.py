"""What every subcommand shares: a flag for each setting, and the settings built
from the flags given and the ``TRAITSTREAM_*`` environment."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)

Commands = Any
"""What ``ArgumentParser.add_subparsers`` returns (argparse does not name its type)."""

Run = Callable[[argparse.Namespace], int]


def add_settings_flags(parser: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    """``--some-setting`` for every field of ``cls``; unset flags leave the
    environment (or the default) to decide."""
    for name, info in cls.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"setting_{name}",
            default=None,
            help=f"{info.description or name} (env TRAITSTREAM_{name.upper()}, default {info.default!r})",
        )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by field name."""
    return {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }


def settings_from(args: argparse.Namespace, cls: type[S]) -> S:
    return cls(**given_settings(args))


def add_command(
    commands: Commands, name: str, helptext: str, cls: type[BaseSettings], run: Run
) -> argparse.ArgumentParser:
    """A subcommand with a flag for each setting of ``cls``, run by ``run``."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=helptext)
    add_settings_flags(sub, cls)
    sub.set_defaults(run=run)
    return sub


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value
