"""Types of the dialects' compiled loops (``_checks.c``); ``dialects/common.py`` and
``dialects/traits.py`` document and use them."""

from collections.abc import Callable
from typing import Any

def plainly_fine(value: Any, limit: int, /) -> bool: ...
def plainly_small(value: Any, limit: int, /) -> bool: ...
def check_typed(
    traits: dict[str, Any],
    where: str,
    types: dict[str, Callable[[Any, str], None]],
    string_check: Callable[[Any, str], None],
    /,
) -> None: ...
def bind(object_check: type, /) -> None: ...
def thrivestack_fields(
    item: dict[str, Any],
    types: dict[str, Callable[[Any, str], None]],
    string_check: Callable[[Any, str], None],
    max_id_chars: int,
    max_depth: int,
    /,
) -> tuple[str, dict[str, Any], str | None, tuple[str, ...], dict[str, Any] | None] | None: ...
