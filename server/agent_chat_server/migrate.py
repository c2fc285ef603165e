"""``migrate-db``: move the appservice's SQLite database to PostgreSQL.

The target gets the appservice's own schema (its migrations, run by mautrix as at startup), then
every row of every table is copied in one PostgreSQL transaction, parents before children (foreign
keys), with SQLite's 0/1 turned into booleans and serial sequences moved past the copied ids.
Finally ``appservice.yaml`` names the new database. The SQLite file is left as it was. Synapse has
its own tool for this (``synapse_port_db``, see docs/deployment.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
import asyncio
import sqlite3

from . import control, postgres
from .backup import sqlite_path
from .errors import ServerError
from .init import load_appservice_config
from .paths import DataDir

#: mautrix's schema-version table: written by the upgrade itself, never copied.
VERSION_TABLE = "version"


def _convert(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type == "boolean":
        return bool(value)
    if pg_type in ("bigint", "integer", "smallint"):
        return int(value)
    if pg_type in ("double precision", "real", "numeric"):
        return float(value)
    if pg_type == "bytea":
        return bytes(value) if not isinstance(value, str) else value.encode()
    if isinstance(value, bytes):
        return value.decode()
    return str(value) if pg_type in ("text", "character varying") else value


def _order(tables: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Tables with every foreign-key parent before its children."""
    parents = {t: {p for c, p in edges if c == t and p != t} for t in tables}
    done: list[str] = []
    while len(done) < len(tables):
        ready = [t for t in tables if t not in done and parents[t] <= set(done)]
        if not ready:
            raise ServerError("cannot order the appservice's tables: circular foreign keys")
        done += sorted(ready)
    return done


async def _copy(src: Path, url: str, token_key: bytes) -> dict[str, int]:
    from mautrix.util.async_db import Database
    import asyncpg

    from agent_chat_appservice.db import upgrade_table, use_key

    # Bring both to the current schema (the SQLite one may predate the latest migration, one
    # of which seals humans' Matrix tokens with the key from appservice.yaml).
    use_key(token_key)
    for db_url in (f"sqlite:{src}", url):
        db = Database.create(
            db_url, upgrade_table=upgrade_table, db_args={"min_size": 1, "max_size": 1}
        )
        await db.start()
        await db.stop()

    conn = await asyncpg.connect(url)
    try:
        tables = [
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        ]
        tables = [t for t in tables if t != VERSION_TABLE]
        edges = [
            (r["child"], r["parent"])
            for r in await conn.fetch(
                "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent "
                "FROM pg_constraint WHERE contype = 'f' "
                "AND connamespace = current_schema()::regnamespace"
            )
        ]
        for t in tables:
            if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{t}")'):
                raise ServerError(
                    f"{postgres.PgTarget.parse(url).dbname} already holds appservice data "
                    f"(table {t}): migrate into an empty database"
                )
        lite = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        counts: dict[str, int] = {}
        try:
            have = {
                r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            async with conn.transaction():
                for t in _order(tables, edges):
                    if t not in have:
                        counts[t] = 0
                        continue
                    cols = await conn.fetch(
                        "SELECT column_name, data_type, column_default "
                        "FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = $1 "
                        "ORDER BY ordinal_position",
                        t,
                    )
                    names = [c["column_name"] for c in cols]
                    types = [c["data_type"] for c in cols]
                    select = ", ".join(f'"{n}"' for n in names)
                    rows = [
                        tuple(_convert(v, ty) for v, ty in zip(row, types, strict=False))
                        for row in lite.execute(f'SELECT {select} FROM "{t}"')
                    ]
                    if rows:
                        await conn.copy_records_to_table(t, records=rows, columns=names)
                    counts[t] = len(rows)
                    for c in cols:
                        if str(c["column_default"] or "").startswith("nextval("):
                            n = c["column_name"]
                            await conn.execute(
                                f"SELECT setval(pg_get_serial_sequence('\"{t}\"', '{n}'), "
                                f'COALESCE(MAX("{n}"), 1), MAX("{n}") IS NOT NULL) FROM "{t}"'
                            )
        finally:
            lite.close()
    finally:
        await conn.close()
    return counts


def migrate_appservice_db(dd: DataDir, to: str, skip_db_check: bool = False) -> list[str]:
    """Copy the appservice's SQLite database into PostgreSQL ``to`` and switch the config."""
    config = load_appservice_config(dd)
    src = sqlite_path(config.database)
    if src is None:
        raise ServerError(f"the appservice already uses {postgres.redact(config.database)}")
    if not postgres.is_postgres_url(to):
        raise ServerError(f"--to wants a postgres:// URL, not {to!r}")
    if control.running_pid(dd) is not None:
        raise ServerError(f"the server in {dd.root} is running: stop it first")
    if not src.exists():
        raise ServerError(f"the appservice database {src} does not exist")
    lines = []
    if not skip_db_check:
        lines.append(postgres.ensure_database(to, for_synapse=False).message)
    with ThreadPoolExecutor(1) as pool:  # a private event loop, whoever calls us
        counts = pool.submit(lambda: asyncio.run(_copy(src, to, config.token_key))).result()
    lines.append("copied " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
    config.database = to
    config.save(dd.appservice_yaml)
    lines.append(
        f"appservice.yaml now uses {postgres.redact(to)}; {src} is left as it was "
        "(delete it once you are happy)"
    )
    return lines
