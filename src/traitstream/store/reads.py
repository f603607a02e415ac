"""Profile reads for the HTTP API (asynchronous; one round trip each)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from traitstream.events import user_profile_id

_SELECT = """
SELECT p.profile_id, p.user_id, p.traits, p.created_at, p.updated_at,
       coalesce(array_agg(i.anonymous_id ORDER BY i.anonymous_id)
                FILTER (WHERE i.anonymous_id IS NOT NULL), '{}')
FROM profiles AS p LEFT JOIN identities AS i ON i.profile_id = p.profile_id
WHERE p.profile_id = {where}
GROUP BY p.profile_id
"""
_BY_ID = _SELECT.replace("{where}", "%s")
_BY_ANONYMOUS = _SELECT.replace(
    "{where}",
    "(SELECT profile_id FROM identities WHERE workspace_id = %s AND anonymous_id = %s)",
)


def _shape(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "profile_id": str(row[0]),
        "user_id": row[1],
        "traits": row[2],
        "anonymous_ids": list(row[5]),
        "created_at": row[3].isoformat(),
        "updated_at": row[4].isoformat(),
    }


class ProfileReader:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def by_user(self, workspace_id: str, user_id: str) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_BY_ID, (user_profile_id(workspace_id, user_id),))
            return _shape(await cur.fetchone())

    async def by_anonymous_id(self, workspace_id: str, anonymous_id: str) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_BY_ANONYMOUS, (workspace_id, anonymous_id))
            return _shape(await cur.fetchone())
