"""Resolving credentials to API keys, with a short in-process cache.

Every dialect hands its credential (a Bearer token, a Basic username, an
Amplitude ``api_key``) to ``Authenticator.resolve``; the scope check is the
caller's, as each endpoint needs different scopes.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable

from psycopg_pool import AsyncConnectionPool

from traitstream.errors import Forbidden, Unauthorized
from traitstream.store.keys import LOOKUP_SQL, WEBSITE_SQL, ApiKey, hash_key

_MISSING_TTL_S = 2.0
_CACHE_LIMIT = 100_000

IDENTIFY_SCOPES = ("identify:write", "identify_api", "telemetry_apis")
"""Any of these lets a key send identifies in the Amplitude, DataFast and Segment dialects."""


class Authenticator:
    def __init__(self, pool: AsyncConnectionPool, ttl_s: float = 30.0) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._websites: dict[tuple[str, str], tuple[float, bool]] = {}

    async def resolve(self, secret: str | None, what: str = "API key") -> ApiKey:
        """The key for ``secret``; raises ``Unauthorized`` naming ``what`` when it
        is missing, unknown or revoked."""
        if not secret:
            raise Unauthorized(f"missing {what}")
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is None or cached[0] < now:
            key = await self._lookup(secret)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[secret] = (now + (self._ttl_s if key else _MISSING_TTL_S), key)
        else:
            key = cached[1]
        if key is None:
            raise Unauthorized(f"unknown or revoked {what}")
        return key

    async def website_known(self, workspace_id: str, website_id: str) -> bool:
        """Whether a live key of ``workspace_id`` carries ``website_id``; cached like keys."""
        now = time.monotonic()
        cached = self._websites.get((workspace_id, website_id))
        if cached is not None and cached[0] >= now:
            return cached[1]
        async with self._pool.connection() as conn:
            cur = await conn.execute(WEBSITE_SQL, (workspace_id, website_id))
            row = await cur.fetchone()
        known = bool(row and row[0])
        if len(self._websites) >= _CACHE_LIMIT:
            self._websites.clear()
        self._websites[(workspace_id, website_id)] = (now + (self._ttl_s if known else _MISSING_TTL_S), known)
        return known

    async def _lookup(self, secret: str) -> ApiKey | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(LOOKUP_SQL, (hash_key(secret),))
            row = await cur.fetchone()
        if row is None:
            return None
        return ApiKey(row[0], row[1], frozenset(row[2]), row[3])


def require_scope(key: ApiKey, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if not key.scopes.intersection(allowed):
        raise Forbidden(f"the API key lacks the scope {' or '.join(allowed)}")


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def basic_username(header: str | None) -> str | None:
    """Segment's SDKs send the write key as the Basic username with an empty password."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None
