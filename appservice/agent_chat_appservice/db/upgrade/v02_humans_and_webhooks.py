"""Humans who log in with their Matrix account, and inbound webhooks."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Humans' Matrix tokens; webhooks")
async def upgrade_v2(conn: Connection) -> None:
    # A human's own Matrix access token (from `ac login`): the appservice cannot masquerade as
    # users outside its namespace, so it acts for a human with their token.
    await conn.execute("ALTER TABLE identity ADD COLUMN matrix_token TEXT")
    await conn.execute(
        """CREATE TABLE webhook (
            hook_id        TEXT PRIMARY KEY,
            name           TEXT NOT NULL UNIQUE,
            user_id        TEXT NOT NULL,
            room_id        TEXT NOT NULL,
            signing_secret TEXT,
            state_change   BOOLEAN NOT NULL DEFAULT false,
            created_at     BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE webhook_delivery (
            hook_id     TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            event_id    TEXT,
            created_at  BIGINT NOT NULL,
            PRIMARY KEY (hook_id, delivery_id)
        )"""
    )
    # The last state posted per key ("failing", "passing"), for state-change mode.
    await conn.execute(
        """CREATE TABLE webhook_state (
            hook_id   TEXT NOT NULL,
            state_key TEXT NOT NULL,
            state     TEXT NOT NULL,
            PRIMARY KEY (hook_id, state_key)
        )"""
    )
