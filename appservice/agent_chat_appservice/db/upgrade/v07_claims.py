"""Claims on files (``ac claim``): one row per (project, agent, pattern), and a row per project
that every claim or release of the project updates first, so that they run one at a time
(PostgreSQL locks the row until the transaction ends; SQLite has one writer anyway)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Claims on files, per project")
async def upgrade_v7(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE claim (
            project    TEXT NOT NULL,
            user_id    TEXT NOT NULL,
            pattern    TEXT NOT NULL,
            exclusive  BOOLEAN NOT NULL,
            reason     TEXT,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (project, user_id, pattern)
        )"""
    )
    await conn.execute("CREATE INDEX claim_expiry_idx ON claim (project, expires_at)")
    await conn.execute(
        """CREATE TABLE claim_project (
            project TEXT PRIMARY KEY,
            version BIGINT NOT NULL DEFAULT 0
        )"""
    )
