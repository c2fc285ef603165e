"""Agent sessions: whether a wake waiter of the session is connected to some API replica, and
until when that is believed without renewal (a lease), so every replica shows it ``idle ·
wakeable``, not only the one holding the connection."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Agent sessions: a connected wake waiter, seen by every API replica")
async def upgrade_v12(conn: Connection) -> None:
    await conn.execute("ALTER TABLE agent_session ADD COLUMN waiter_since_ms BIGINT")
    await conn.execute("ALTER TABLE agent_session ADD COLUMN waiter_until_ms BIGINT")
