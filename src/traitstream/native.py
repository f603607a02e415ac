"""Which implementation runs the hot paths: the compiled modules, or Python alone.

Every compiled module has a Python twin that is its reference, and every module
that may use one asks ``use`` first, so that one switch decides for the whole
process. Each caller reads::

    if native.use("traitstream.compiled._merge"):
        from traitstream.compiled import _merge
    else:
        _merge = None

``TRAITSTREAM_IMPL`` (read as the package's modules are imported):

- ``c``: the compiled modules are required; a missing one is an ``ImportError``
  at import time, naming it, rather than a slower process that nobody notices;
- ``python``: the compiled modules are never imported;
- unset or empty: each compiled module where it was built, else its Python twin.

``active()`` reports the choice made for each module; the edge and the workers
log it at start.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Literal

ENV = "TRAITSTREAM_IMPL"
Impl = Literal["c", "python"]
CHOICES: tuple[str, ...] = ("c", "python")

MODULES = (
    "traitstream.compiled._v1c",
    "traitstream.compiled._checks",
    "traitstream.compiled._merge",
)
"""The compiled modules setup.py builds, all in ``compiled/``."""

_loaded: dict[str, Impl] = {}


class ImplementationError(ImportError):
    """``TRAITSTREAM_IMPL`` asks for something this installation cannot give."""


def requested() -> Impl | None:
    """The implementation ``TRAITSTREAM_IMPL`` asks for; None: whichever is there."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in CHOICES:
        raise ImplementationError(f"{ENV}={value!r} is not one of: c, python (or unset)")
    return "c" if value == "c" else "python"


def use(name: str) -> bool:
    """Whether the compiled module ``name`` (one of ``MODULES``) serves; when True it
    is imported already. Raises ``ImplementationError`` when ``TRAITSTREAM_IMPL=c``
    and the module is missing or does not load (built for another Python)."""
    if name not in MODULES:
        raise ValueError(f"{name} is not a compiled module of traitstream")
    choice = requested()
    if choice == "python":
        _loaded[name] = "python"
        return False
    try:
        importlib.import_module(name)
    except ImportError as exc:
        if choice == "c":
            raise ImplementationError(
                f"{ENV}=c, but the compiled module {name} does not load ({exc}); "
                "reinstall where a C compiler is available, or set TRAITSTREAM_IMPL=python"
            ) from exc
        _loaded[name] = "python"
        return False
    _loaded[name] = "c"
    return True


def decline(name: str, reason: str) -> None:
    """A loaded compiled module that its caller cannot use after all (``reason``):
    its Python twin serves, and ``active`` says so. Raises ``ImplementationError``
    when ``TRAITSTREAM_IMPL=c``."""
    if requested() == "c":
        raise ImplementationError(f"{ENV}=c, but {name} cannot serve: {reason}")
    logging.getLogger(__name__).warning("%s is not used: %s", name, reason, extra={"compiled_module": name})
    _loaded[name] = "python"


def active() -> dict[str, Impl]:
    """The implementation each compiled module's callers run, for the modules
    loaded so far (every one, once the package's hot paths are imported)."""
    return dict(_loaded)


def missing() -> list[str]:
    """The compiled modules this installation lacks or cannot load, whatever
    ``TRAITSTREAM_IMPL`` says."""
    absent = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(name)
    return absent


def log_choice() -> None:
    """At the start of a long-running process: which implementation runs, and a
    warning when compiled modules were wanted but are missing."""
    logger = logging.getLogger(__name__)
    if requested() == "python":
        logger.info("running the Python implementation (%s=python)", ENV, extra={"implementation": "python"})
        return
    absent = missing()
    if absent:
        logger.warning(
            "running without the compiled modules %s: everything works, more slowly; "
            "reinstall where a C compiler is available",
            ", ".join(absent),
            extra={"missing_extensions": absent},
        )
