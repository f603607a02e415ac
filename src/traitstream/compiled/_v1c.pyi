"""Types of the compiled v1 codec (``_v1c.c``); ``v1.py`` documents and binds it."""

from collections.abc import Callable
from typing import Any

from traitstream.events import IdentifyEvent, Kind, Op, Operation

def bind(
    event: type[IdentifyEvent],
    operation: type[Operation],
    kinds: tuple[Kind, ...],
    ops: tuple[Op, ...],
    kind_index: dict[Kind, int],
    op_index: dict[Op, int],
    loads: Callable[[Any], Any],
    dumps: Callable[[Any], bytes],
    not_plain: type[Exception],
    max_id_chars: int,
    /,
) -> None: ...
def read_event(data: bytes, start: int, /) -> IdentifyEvent: ...
def encode_body(event: IdentifyEvent, header: bytes, /) -> bytes: ...
