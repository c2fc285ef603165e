"""The send rate limiter's buckets, for several appservice processes on one database: each
caller's bucket is one row that every replica updates in a single statement."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Send rate buckets shared by appservice replicas")
async def upgrade_v8(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE send_rate (
            user_id    TEXT PRIMARY KEY,
            tokens     DOUBLE PRECISION NOT NULL,
            updated_ms BIGINT NOT NULL,
            allowed    BOOLEAN NOT NULL
        )"""
    )
