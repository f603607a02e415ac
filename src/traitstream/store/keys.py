"""API keys: created once, stored as SHA-256 hashes, looked up by hash.

Keys are 32 random bytes, so a plain hash is safe to store (no password
stretching needed) and cheap to check on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

SCOPES = ("identify_api", "telemetry_apis", "identify:write", "profiles:read", "profiles:delete")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    workspace_id: str
    scopes: frozenset[str]
    website_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key: ApiKey
    description: str | None
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def key_id_of(secret: str) -> str:
    """A short, non-secret id for listing and revoking: the hash's first 12 hex digits."""
    return "key_" + hash_key(secret).hex()[:12]


def new_secret(prefix: str = "ts_") -> str:
    return prefix + secrets.token_urlsafe(32)


def check_scopes(scopes: list[str]) -> frozenset[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"at least one scope is needed; known: {', '.join(SCOPES)}")
    return frozenset(scopes)


_INSERT = """
INSERT INTO api_keys (key_id, key_hash, workspace_id, scopes, website_id, description)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (key_hash) DO UPDATE SET workspace_id = EXCLUDED.workspace_id,
    scopes = EXCLUDED.scopes, website_id = EXCLUDED.website_id, revoked_at = NULL
"""

LOOKUP_SQL = """
SELECT key_id, workspace_id, scopes, website_id FROM api_keys
WHERE key_hash = %s AND revoked_at IS NULL
"""

# A DataFast website exists in a workspace while a live key of that workspace
# carries its id (``traitstream keys create --website-id``): no table of its own.
WEBSITE_SQL = """
SELECT EXISTS (SELECT 1 FROM api_keys
               WHERE workspace_id = %s AND website_id = %s AND revoked_at IS NULL)
"""


def register(
    conn: psycopg.Connection[Any],
    secret: str,
    workspace_id: str,
    scopes: frozenset[str],
    *,
    website_id: str | None = None,
    description: str | None = None,
) -> ApiKey:
    """Store ``secret`` (hashed). Registering the same secret again updates it."""
    key = ApiKey(key_id_of(secret), workspace_id, scopes, website_id)
    conn.execute(
        _INSERT,
        (key.key_id, hash_key(secret), workspace_id, sorted(scopes), website_id, description),
    )
    return key


def list_keys(conn: psycopg.Connection[Any], workspace_id: str | None) -> list[KeyInfo]:
    rows = conn.execute(
        "SELECT key_id, workspace_id, scopes, website_id, description, created_at, revoked_at"
        " FROM api_keys WHERE %(w)s::text IS NULL OR workspace_id = %(w)s ORDER BY created_at",
        {"w": workspace_id},
    ).fetchall()
    return [KeyInfo(ApiKey(r[0], r[1], frozenset(r[2]), r[3]), r[4], r[5], r[6]) for r in rows]


def revoke(conn: psycopg.Connection[Any], key_id: str) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount > 0
