"""Delivery stages and agent sessions.

``stage``: per (recipient, room, stage) the high-water position (a message ``seq``) the
recipient's ``shown``, ``woken`` or ``read`` stage has reached, when it last moved, and for
``shown``/``woken`` which session and CLI moved it. A message is at a stage for a recipient
when its seq is at or below that position: written when a recipient acts, never when a message
arrives, so a message still costs O(1) ledger writes in a room of any size.

``agent_session``: one row per agent session (an identity may run several) as its hooks, wake
waiter and session-end hook report it, with its attention accounting.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Delivery stages per recipient and room; agent sessions")
async def upgrade_v9(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE stage (
            user_id    TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            stage      TEXT NOT NULL,
            stream_pos BIGINT NOT NULL,
            at_ms      BIGINT NOT NULL,
            session    TEXT,
            cli        TEXT,
            PRIMARY KEY (room_id, user_id, stage)
        )"""
    )
    await conn.execute(
        """CREATE TABLE agent_session (
            user_id        TEXT NOT NULL,
            session        TEXT NOT NULL,
            cli            TEXT,
            host           TEXT,
            repo           TEXT,
            started_ms     BIGINT NOT NULL,
            seen_ms        BIGINT NOT NULL,
            hook_ms        BIGINT,
            ended_ms       BIGINT,
            lines_shown    BIGINT NOT NULL DEFAULT 0,
            chars_injected BIGINT NOT NULL DEFAULT 0,
            wakes          BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, session)
        )"""
    )
