"""Schema upgrades keep what users see: a database written by an older version, upgraded.

On a real SQLite file and a real PostgreSQL database (the latter skips without
AGENT_CHAT_TEST_POSTGRES).
"""

from __future__ import annotations

import asyncio
import secrets

from mautrix.util.async_db import Database, UpgradeTable
import pytest

from agent_chat_appservice import db as tables

ROOM, ALICE, BOB, CAROL = "!r:x", "@_ac_alice:x", "@_ac_bob:x", "@_ac_carol:x"


def _upgrades_up_to(version: int) -> UpgradeTable:
    older = UpgradeTable()
    older.upgrades = tables.upgrade_table.upgrades[:version]
    return older


async def _write_v3_ledger(url: str) -> None:
    """What version 3 stored: Bob has 3 unread (2 by Alice, 1 urgent), Alice 1 (Carol's)."""
    old = Database.create(url, upgrade_table=_upgrades_up_to(3))
    await old.start()
    try:
        async with old.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO room (room_id, alias) VALUES ($1, 'proj')", ROOM)
            for user, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
                await conn.execute(
                    "INSERT INTO member (room_id, user_id, membership, displayname) "
                    "VALUES ($1, $2, 'join', $3)",
                    ROOM,
                    user,
                    name,
                )
            for i, sender in enumerate((CAROL, BOB, ALICE, CAROL, ALICE)):
                await conn.execute(
                    "INSERT INTO message (event_id, room_id, sender, ts, msgtype, body, urgent) "
                    "VALUES ($1, $2, $3, $4, 'm.text', '\"hi\"', $5)",
                    f"$e{i}",
                    ROOM,
                    sender,
                    i,
                    i == 3,
                )
            rows = [
                (BOB, 3, True, "Alice", 2),
                (ALICE, 1, False, "Carol", 3),
                (CAROL, 0, False, None, 5),
            ]
            for user, count, urgent, last_sender, read in rows:
                await conn.execute(
                    "INSERT INTO unread (user_id, room_id, count, urgent, last_read_seq,"
                    " last_sender) VALUES ($1, $2, $3, $4, $5, $6)",
                    user,
                    ROOM,
                    count,
                    urgent,
                    read,
                    last_sender,
                )
    finally:
        await old.stop()


def _entry(entries: list[tables.ledger.Unread]) -> tuple[int, bool, str | None] | None:
    for u in entries:
        if u.room_id == ROOM:
            return u.count, u.urgent, u.last_sender
    return None


def test_upgrading_keeps_every_unread_count_and_counts_on(database_url: str) -> None:
    async def scenario() -> None:
        await _write_v3_ledger(database_url)
        db = Database.create(database_url, upgrade_table=tables.upgrade_table)
        await db.start()
        tables.init(db)
        try:
            assert _entry(await tables.Ledger.unread(BOB)) == (3, True, "Alice")
            assert _entry(await tables.Ledger.unread(ALICE)) == (1, False, "Carol")
            assert _entry(await tables.Ledger.unread(CAROL)) is None
            # Counting goes on from there: Alice writes; her own message is not news to her.
            async with db.acquire() as conn, conn.transaction():
                _, _, previous, _ = await tables.Room.message_context(conn, ROOM, ALICE)
                seq = await tables.Message.insert(
                    conn, "$e5", ROOM, ALICE, 5, "m.text", "more", None, False
                )
                await tables.Ledger.on_message(
                    conn, ROOM, seq, ALICE, "Alice", False, [], previous
                )
            assert _entry(await tables.Ledger.unread(BOB)) == (4, True, "Alice")
            assert _entry(await tables.Ledger.unread(CAROL)) == (1, False, "Alice")
            assert _entry(await tables.Ledger.unread(ALICE)) == (1, False, "Carol")
            # Reading recounts from the marker: Bob read up to Carol's urgent message.
            async with tables.transaction() as conn:
                assert await tables.Ledger.mark_read(conn, BOB, ROOM, 4, "$e3")
            assert _entry(await tables.Ledger.unread(BOB)) == (2, False, "Alice")
        finally:
            await db.stop()

    asyncio.run(scenario())


KEY = bytes(range(32))
DANA, ERIN = "@dana:x", "@erin:x"
#: Dana's Matrix token as a version-4 database kept it (plain text), made fresh per run.
DANA_TOKEN = f"syt_{secrets.token_urlsafe(16)}"


async def _write_v4_humans(url: str) -> None:
    """What versions 2-4 stored: a human's Matrix token in plain text."""
    old = Database.create(url, upgrade_table=_upgrades_up_to(4))
    await old.start()
    try:
        q = (
            "INSERT INTO identity (user_id, nick, nick_key, kind, created_at, matrix_token) "
            "VALUES ($1, $2, $3, $4, 0, $5)"
        )
        await old.execute(q, DANA, "dana", "dana", "human", DANA_TOKEN)
        await old.execute(q, ERIN, "erin", "erin", "human", None)
        await old.execute(q, ALICE, "alice", "alice", "agent", None)
    finally:
        await old.stop()


def test_upgrading_seals_humans_matrix_tokens(database_url: str) -> None:
    async def scenario() -> None:
        await _write_v4_humans(database_url)
        tables.use_key(KEY)
        db = Database.create(database_url, upgrade_table=tables.upgrade_table)
        await db.start()
        tables.init(db)
        try:
            stored = await db.fetchval("SELECT matrix_token FROM identity WHERE user_id=$1", DANA)
            assert DANA_TOKEN not in stored and stored.startswith("ac1:")
            assert await tables.Identity.matrix_tokens() == {DANA: DANA_TOKEN}
            # Under another key (the as_token changed) it does not open: Dana logs in again.
            tables.use_key(bytes(32))
            assert await tables.Identity.matrix_tokens() == {}
        finally:
            await db.stop()

    asyncio.run(scenario())


def test_tokens_to_seal_and_no_key_fail_the_upgrade_and_say_why(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        await _write_v4_humans(database_url)
        monkeypatch.setattr(tables.base.Table, "sealer", None)
        db = Database.create(database_url, upgrade_table=tables.upgrade_table)
        try:
            with pytest.raises(RuntimeError, match="use_key"):
                await db.start()
            # Nothing changed: the upgrade ran in a transaction.
            stored = await db.fetchval("SELECT matrix_token FROM identity WHERE user_id=$1", DANA)
            assert stored == DANA_TOKEN
        finally:
            await db.stop()

    asyncio.run(scenario())
