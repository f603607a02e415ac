"""Seed corpora: valid inputs of each target, from the API documents' samples.

Each target starts from what real traffic looks like (the seed requests of
``tests/fixtures/seeds``, their Avro records, a profile's stored stamps), so the
fuzzer spends its time near the valid shapes the fast paths take.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from tests.fuzz.targets import ENVELOPE
from traitstream.avro import codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID
from traitstream.dialects import amplitude, datafast, thrivestack
from traitstream.merge import Profile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"


def _requests() -> list[bytes]:
    bodies = [(FIXTURES / name).read_bytes() for name in ("thrivestack_000.json", "thrivestack_001.json")]
    bodies.append((FIXTURES / "datafast_003.json").read_bytes())
    form = orjson.loads((FIXTURES / "amplitude_002.form.json").read_bytes())
    bodies.append(form["identification"].encode() if isinstance(form["identification"], str) else b"{}")
    bodies.append(orjson.dumps([orjson.loads(bodies[0]), orjson.loads(bodies[1])]))
    bodies.append(b'{"type": "identify", "userId": "u1", "traits": {"plan": "pro", "age": 40}}')
    return bodies


def _events() -> list:
    found = []
    bodies = _requests()
    for parse in (
        lambda: thrivestack.parse(bodies[0], ENVELOPE),
        lambda: thrivestack.parse(bodies[1], ENVELOPE),
        lambda: [datafast.parse(bodies[2], ENVELOPE, "site").event],
        lambda: amplitude.parse_identify({"identification": bodies[3].decode()}, ENVELOPE).identifies,
    ):
        found.extend(parse())
    return found


def corpus(target: str) -> list[bytes]:
    if target == "dialects":
        return _requests()
    events = _events()
    if target == "avro_read":
        return [codec.encode(event, LOCAL_SCHEMA_ID)[5:] for event in events]
    if target == "avro_encode":
        return [orjson.dumps(event.operations[0].value if event.operations else {}) for event in events]
    profile = Profile()
    for event in events:
        profile.apply_event(event)
    return [
        profile.meta_text().encode(),
        *(orjson.dumps({o.trait: o.value for o in e.operations}) for e in events),
    ]


def write(target: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for item in corpus(target):
        (folder / hashlib.sha1(item).hexdigest()).write_bytes(item)
    return folder
