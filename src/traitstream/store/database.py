"""Creating the database and applying migrations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from importlib.abc import Traversable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x7472_6169_7473  # any constant shared by every migrating process


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` when it does not exist yet."""
    params = conninfo_to_dict(url)
    name = params.get("dbname")
    if not name:
        return
    try:
        psycopg.connect(url, connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
            log.info("created database %s", name)
        except psycopg.errors.DuplicateDatabase:
            pass


def migrate(url: str) -> list[str]:
    """Apply the migrations not applied yet, in order; returns the versions applied.
    Safe to run from several processes at once (an advisory lock serializes them)."""
    ensure_database(url)
    shipped = _migrations()
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, file in shipped:
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(file.read_text("utf-8").encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
                log.info("applied migration %s", version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def _migrations() -> list[tuple[str, Traversable]]:
    """(version, file) of every migration this release ships, in the order they apply."""
    files = (f for f in resources.files("traitstream.store.migrations").iterdir() if f.name.endswith(".sql"))
    return sorted((f.name.removesuffix(".sql"), f) for f in files)


def pending_migrations(url: str) -> list[str]:
    """The versions this release ships that the database has not applied yet."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        try:
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        except psycopg.errors.UndefinedTable:
            done = set()
    return [version for version, _file in _migrations() if version not in done]


def wait_for_migrations(url: str, every_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the database has every migration this release ships. A worker
    started beside the migration its SQL needs (a rollout applies both at once)
    waits for it here instead of failing on a missing column and restarting. A
    database that cannot be reached is left to the worker's own retries."""
    while True:
        try:
            pending = pending_migrations(url)
        except psycopg.OperationalError as exc:
            log.warning("could not check the database's migrations: %s", exc)
            return
        if not pending:
            return
        log.warning(
            "waiting for migrations %s (traitstream migrate applies them)",
            ", ".join(pending),
            extra={"pending": pending},
        )
        sleep(every_s)
