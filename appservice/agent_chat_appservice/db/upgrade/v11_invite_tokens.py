"""Invite tokens (``agent-chat-server invite``): registration tokens for new machines that
expire and can be revoked, kept as SHA-256 hashes only."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Invite tokens: expiring, revocable registration tokens, stored hashed")
async def upgrade_v11(conn: Connection) -> None:
    # IF NOT EXISTS: registered before v11/v12 existed, a database made meanwhile has it.
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS invite_token (
            id          TEXT PRIMARY KEY,
            token_hash  TEXT NOT NULL UNIQUE,
            note        TEXT NOT NULL DEFAULT '',
            created_at  BIGINT NOT NULL,
            expires_at  BIGINT NOT NULL,
            revoked_at  BIGINT,
            uses        INTEGER NOT NULL DEFAULT 0,
            last_used   BIGINT
        )"""
    )
