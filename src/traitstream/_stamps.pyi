"""Types of the compiled stamps (``_stamps.c``); ``merge.py`` documents and uses it."""

from typing import Any

Stamp = list[int | str]

def expand(meta: dict[str, Any], /) -> tuple[dict[str, Stamp], dict[str, Stamp], Stamp | None] | None: ...
def compact(
    written: dict[str, Stamp], once: dict[str, Stamp], cleared: Stamp | None, /
) -> dict[str, Any] | None: ...
