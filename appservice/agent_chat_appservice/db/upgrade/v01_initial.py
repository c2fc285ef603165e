"""The first schema: identities, rooms, members, messages, the unread ledger."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme

from .table import register


@register("Initial schema")
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    seq = "BIGSERIAL PRIMARY KEY" if scheme == Scheme.POSTGRES else "INTEGER PRIMARY KEY"
    await conn.execute(
        """CREATE TABLE identity (
            user_id     TEXT PRIMARY KEY,
            nick        TEXT NOT NULL,
            nick_key    TEXT NOT NULL UNIQUE,
            kind        TEXT NOT NULL,
            created_at  BIGINT NOT NULL,
            last_active BIGINT
        )"""
    )
    # API tokens are stored as SHA-256 hashes: a leaked database gives no usable token.
    await conn.execute(
        """CREATE TABLE api_token (
            token_hash TEXT PRIMARY KEY,
            user_id    TEXT NOT NULL REFERENCES identity(user_id) ON DELETE CASCADE,
            created_at BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX api_token_user_idx ON api_token(user_id)")
    await conn.execute(
        """CREATE TABLE room (
            room_id    TEXT PRIMARY KEY,
            alias      TEXT UNIQUE,
            name       TEXT,
            topic      TEXT,
            is_direct  BOOLEAN NOT NULL DEFAULT false
        )"""
    )
    # One direct chat per pair of users; user_a < user_b.
    await conn.execute(
        """CREATE TABLE direct_chat (
            user_a  TEXT NOT NULL,
            user_b  TEXT NOT NULL,
            room_id TEXT NOT NULL,
            PRIMARY KEY (user_a, user_b)
        )"""
    )
    await conn.execute(
        """CREATE TABLE member (
            room_id     TEXT NOT NULL,
            user_id     TEXT NOT NULL,
            membership  TEXT NOT NULL,
            displayname TEXT,
            PRIMARY KEY (room_id, user_id)
        )"""
    )
    await conn.execute("CREATE INDEX member_user_idx ON member(user_id)")
    # seq orders messages as Synapse delivered them (transactions arrive in order).
    await conn.execute(
        f"""CREATE TABLE message (
            seq       {seq},
            event_id  TEXT NOT NULL UNIQUE,
            room_id   TEXT NOT NULL,
            sender    TEXT NOT NULL,
            ts        BIGINT NOT NULL,
            msgtype   TEXT NOT NULL,
            body      TEXT NOT NULL,
            prefix    TEXT,
            urgent    BOOLEAN NOT NULL DEFAULT false
        )"""
    )
    await conn.execute("CREATE INDEX message_room_seq_idx ON message(room_id, seq)")
    await conn.execute(
        """CREATE TABLE mention (
            room_id TEXT NOT NULL,
            seq     BIGINT NOT NULL,
            user_id TEXT NOT NULL,
            PRIMARY KEY (room_id, seq, user_id)
        )"""
    )
    await conn.execute(
        """CREATE TABLE unread (
            user_id         TEXT NOT NULL,
            room_id         TEXT NOT NULL,
            count           INTEGER NOT NULL DEFAULT 0,
            urgent          BOOLEAN NOT NULL DEFAULT false,
            last_read_seq   BIGINT NOT NULL DEFAULT 0,
            last_read_event TEXT,
            last_sender     TEXT,
            PRIMARY KEY (user_id, room_id)
        )"""
    )
    # Homeserver transactions already applied: a redelivered transaction changes nothing.
    # Synapse can restart its txnId counter, so the id alone is not trusted: the digest of the
    # transaction's contents must match too.
    await conn.execute(
        """CREATE TABLE hs_transaction (
            txn_id      TEXT PRIMARY KEY,
            digest      TEXT NOT NULL,
            received_at BIGINT NOT NULL
        )"""
    )
    # Client transaction ids of sends: a retried send answers the first result.
    await conn.execute(
        """CREATE TABLE client_send (
            user_id    TEXT NOT NULL,
            txn_id     TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            event_id   TEXT,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (user_id, txn_id)
        )"""
    )
