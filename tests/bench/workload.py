"""What the load generator sends: Thrivestack identifies shaped like real traffic
(a handful of reserved and ``enrichment_*`` traits, a context, a creation time),
for users drawn from a fixed population so that most writes update a profile."""

from __future__ import annotations

import random
from typing import Any

import orjson

PLANS = ("free", "starter", "pro", "team", "enterprise")
CITIES = (("London", "GB"), ("Paris", "FR"), ("Berlin", "DE"), ("Austin", "US"), ("Pune", "IN"))


def user_id(index: int) -> str:
    return f"bench-user-{index:08d}"


def identify(rng: random.Random, index: int) -> dict[str, Any]:
    city, country = CITIES[index % len(CITIES)]
    return {
        "user_id": user_id(index),
        "traits": {
            "first_name": "Ada",
            "last_name": f"Lovelace-{index % 997}",
            "email": f"ada.{index}@example.com",
            "plan": rng.choice(PLANS),
            "seats": rng.randrange(1, 500),
            "company": {"name": f"Company {index % 5000}", "industry": "software"},
            "enrichment_city": city,
            "enrichment_country_code": country,
        },
        "timestamp": "2024-03-01T10:00:00.000Z",
        "context": {"ip": "127.0.0.1", "library": {"name": "traitstream-bench", "version": "1"}},
    }


def bodies(count: int, size: int, population: int, seed: int) -> list[bytes]:
    """``count`` request bodies: a JSON array of ``size`` identifies, or one object
    when ``size`` is 1. Users are drawn uniformly from ``population``."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        items = [identify(rng, rng.randrange(population)) for _ in range(size)]
        out.append(orjson.dumps(items[0] if size == 1 else items))
    return out


def user_sample(rng: random.Random, population: int, size: int) -> list[int]:
    """``size`` distinct user indexes (one batch must not touch a row twice)."""
    return rng.sample(range(population), min(size, population))
