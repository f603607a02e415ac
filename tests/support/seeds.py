"""The seed documents' request samples, as stored in tests/fixtures/seeds."""

from __future__ import annotations

from pathlib import Path

SEEDS = Path(__file__).resolve().parent.parent / "fixtures" / "seeds"


def seed_bytes(name: str) -> bytes:
    return (SEEDS / name).read_bytes()
