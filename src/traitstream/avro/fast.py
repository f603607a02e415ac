"""The v1 record's fast path: the compiled encoder and decoder (``compiled/_v1c.c``).

On the bench, the compiled codec saves about a quarter of the edge's CPU per
identify and a third of the workers' (docs/performance.md). It is a fast path
only: the reference is ``binary.py`` with ``record.from_record``, and ``codec``
falls back to it whenever this path declines. ``ENCODE`` and ``READ`` are None where it does not serve: with
``TRAITSTREAM_IMPL=python``, without the compiled module, or when the bundled
schema is no longer the one the C code was written for.

- ``ENCODE(event, header)``: ``header`` then the Avro body, byte for byte as
  ``binary.encode_body`` writes it; raises for anything but an ordinary event,
  and the reference then decides.
- ``READ(data, start)``: the event of a record it can prove valid with cheap
  checks, equal to what the reference decodes; raises ``ValueError`` or
  ``LookupError`` for anything else, and the reference then finds out why.

The C code reads and writes the first revision of v1 (identifies and erasures;
aliases are the reference's alone), field by field in the schema's order. A
change to ``identify_v1_r1.avsc`` changes its fingerprint: until ``_v1c.c``
follows and ``SCHEMA_FINGERPRINT`` is updated, the fast path stays off (and
``TRAITSTREAM_IMPL=c`` refuses to start), so records always go through the
reference rather than being misread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from traitstream import native
from traitstream.avro.binary import KINDS, OPS
from traitstream.avro.schemas import load_v1_r1_text, parse
from traitstream.dialects.common import MAX_ID_CHARS
from traitstream.events import IdentifyEvent, Kind, Op, Operation

SCHEMA_FINGERPRINT = "f6ee31f6cd63dd558dae3be217747a408fd616d397720df4f5d7bd93c4b39eb3"
"""SHA-256 of the canonical form of the schema revision ``_v1c.c`` reads and writes:
the first revision of v1 (``identify_v1_r1.avsc``)."""


class NotPlain(ValueError):
    """The fast path cannot prove the record valid."""


def bundled_fingerprint() -> str:
    return str(fingerprint(to_parsing_canonical_form(parse(load_v1_r1_text())), "SHA-256"))


def _load() -> Any:
    if not native.use("traitstream.compiled._v1c"):
        return None
    from traitstream.compiled import _v1c as module

    if bundled_fingerprint() != SCHEMA_FINGERPRINT:
        native.decline(
            "traitstream.compiled._v1c",
            "it was written for another version of identify_v1.avsc; "
            "update compiled/_v1c.c and avro/fast.py's SCHEMA_FINGERPRINT",
        )
        return None
    module.bind(
        IdentifyEvent,
        Operation,
        (Kind.IDENTIFY, Kind.ERASE),
        tuple(Op(name) for name in OPS[:-1]),
        {Kind(name): index for index, name in enumerate(KINDS[:-1])},
        {Op(name): index for index, name in enumerate(OPS[:-1])},
        orjson.loads,
        orjson.dumps,
        NotPlain,
        MAX_ID_CHARS,
    )
    return module


_v1c = _load()

ENCODE: Callable[[IdentifyEvent, bytes], bytes] | None = None if _v1c is None else _v1c.encode_body
READ: Callable[[bytes, int], IdentifyEvent] | None = None if _v1c is None else _v1c.read_event
