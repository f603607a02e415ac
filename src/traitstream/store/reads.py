"""Profile reads for the HTTP API (asynchronous; one round trip each).

A user id resolves as the workers resolve it: through ``user_aliases`` first (a
user id that an alias made the previous id of another user), else to its own
profile.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from traitstream.events import user_profile_id
from traitstream.provenance import provenance

_SELECT = """
SELECT p.profile_id, p.user_id, p.traits, p.created_at, p.updated_at,
       coalesce(array_agg(i.anonymous_id ORDER BY i.anonymous_id)
                FILTER (WHERE i.anonymous_id IS NOT NULL), '{}'){stamps}
FROM profiles AS p LEFT JOIN identities AS i ON i.profile_id = p.profile_id
WHERE p.profile_id = {where}
GROUP BY p.profile_id
"""
_STAMPS = ", coalesce(p.stamps, p.trait_meta, '{}')::text"
_USER = "coalesce((SELECT profile_id FROM user_aliases WHERE workspace_id = %s AND user_id = %s), %s)"
_ANONYMOUS = "(SELECT profile_id FROM identities WHERE workspace_id = %s AND anonymous_id = %s)"


def _query(where: str, with_provenance: bool) -> str:
    return _SELECT.replace("{stamps}", _STAMPS if with_provenance else "").replace("{where}", where)


_QUERIES = {
    (where, with_provenance): _query(where, with_provenance)
    for where in (_USER, _ANONYMOUS)
    for with_provenance in (False, True)
}


def _shape(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    profile = {
        "profile_id": str(row[0]),
        "user_id": row[1],
        "traits": row[2],
        "anonymous_ids": list(row[5]),
        "created_at": row[3].isoformat(),
        "updated_at": row[4].isoformat(),
    }
    if len(row) > 6:
        profile["provenance"] = provenance(row[2], orjson.loads(row[6]))
    return profile


class ProfileReader:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def by_user(
        self, workspace_id: str, user_id: str, *, with_provenance: bool = False
    ) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _QUERIES[(_USER, with_provenance)],
                (workspace_id, user_id, user_profile_id(workspace_id, user_id)),
            )
            return _shape(await cur.fetchone())

    async def by_anonymous_id(
        self, workspace_id: str, anonymous_id: str, *, with_provenance: bool = False
    ) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_QUERIES[(_ANONYMOUS, with_provenance)], (workspace_id, anonymous_id))
            return _shape(await cur.fetchone())
