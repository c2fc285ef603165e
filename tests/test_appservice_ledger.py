"""The ledger under concurrent writers, on a real PostgreSQL database (SQLite runs one writer
at a time, so these interleavings cannot happen there; skipped without
AGENT_CHAT_TEST_POSTGRES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import asyncio
import time

from mautrix.util.async_db import Database

from agent_chat_appservice import db as tables

ROOM, ALICE, BOB = "!r:x", "@_ac_alice:x", "@_ac_bob:x"


def _count(entries: list[tables.ledger.Unread]) -> int:
    return next((u.count for u in entries if u.room_id == ROOM), 0)


async def _message(conn, event_id: str, sender: str, name: str) -> int:
    _, _, previous, _ = await tables.Room.message_context(conn, ROOM, sender)
    seq = await tables.Message.insert(conn, event_id, ROOM, sender, 0, "m.text", "hi", None, False)
    await tables.Ledger.on_message(conn, ROOM, seq, sender, name, False, [], previous)
    return seq


async def _mark_read(user_id: str, seq: int, event_id: str) -> bool:
    async with tables.transaction() as conn:
        return await tables.Ledger.mark_read(conn, user_id, ROOM, seq, event_id)


async def _blocked_on_a_lock(db: Database) -> bool:
    """Whether a session on this database waits for a lock (the other one holds it)."""
    q = (
        "SELECT COUNT(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return await db.fetchval(q) > 0


@asynccontextmanager
async def _ledger_with_bobs_message(pg_url: str) -> AsyncIterator[tuple[Database, int]]:
    """A fresh ledger: Alice and Bob in the room, Bob's message counted (unread for Alice);
    the database and that message's position."""
    db = Database.create(
        pg_url, upgrade_table=tables.upgrade_table, db_args={"min_size": 1, "max_size": 4}
    )
    await db.start()
    tables.init(db)
    try:
        async with db.acquire() as conn, conn.transaction():
            await tables.Room.ensure(conn, ROOM)
            await tables.Ledger.on_join(conn, ROOM, ALICE)
            await tables.Ledger.on_join(conn, ROOM, BOB)
            bobs = await _message(conn, "$bob", BOB, "Bob")
        assert _count(await tables.Ledger.unread(ALICE)) == 1
        yield db, bobs
    finally:
        await db.stop()


async def _until_blocked(db: Database, task: asyncio.Task[object], what: str) -> None:
    """Not "sleep, then see it is not done": wait until PostgreSQL shows ``task`` blocked on
    a lock (or ``task`` finished, which is the bug)."""
    deadline = time.monotonic() + 10
    while not task.done() and not await _blocked_on_a_lock(db):
        assert time.monotonic() < deadline, f"the {what} neither finished nor blocked"
        await asyncio.sleep(0.01)
    assert not task.done(), f"the {what} did not wait"


def test_reading_while_your_own_message_is_counted_leaves_nothing_unread(pg_url: str) -> None:
    """Alice reads Bob's message while her reply is being counted: the read waits for the
    count to commit, then recounts; her reply never shows as unread to her."""

    async def scenario() -> None:
        async with _ledger_with_bobs_message(pg_url) as (db, bobs):
            counted, commit = asyncio.Event(), asyncio.Event()

            async def count_alices_reply() -> None:
                async with db.acquire() as conn, conn.transaction():
                    await _message(conn, "$alice", ALICE, "Alice")
                    counted.set()
                    await commit.wait()

            writer = asyncio.create_task(count_alices_reply())
            await counted.wait()
            reader = asyncio.create_task(_mark_read(ALICE, bobs, "$bob"))
            await _until_blocked(db, reader, "read (of the message being counted)")
            commit.set()
            await writer
            assert await reader
            assert _count(await tables.Ledger.unread(ALICE)) == 0
            assert _count(await tables.Ledger.unread(BOB)) == 1

    asyncio.run(scenario())


def test_a_count_after_a_read_waits_for_it_and_keeps_its_own_raise_and_urgency(
    pg_url: str,
) -> None:
    """The other order: Alice's read is under way (not committed) when an urgent message and
    her reply are counted. The count waits for the read to commit, then flags her row (the
    read cleared the old flag) and raises her base (her reply is not unread to her)."""

    async def scenario() -> None:
        async with _ledger_with_bobs_message(pg_url) as (db, bobs):
            await db.execute("UPDATE unread SET urgent=true WHERE user_id=$1", ALICE)

            read, commit = asyncio.Event(), asyncio.Event()

            async def read_bobs() -> bool:
                async with db.acquire() as conn, conn.transaction():
                    moved = await tables.Ledger.mark_read(conn, ALICE, ROOM, bobs, "$bob")
                    read.set()
                    await commit.wait()
                    return moved

            async def count_two() -> None:
                async with db.acquire() as conn, conn.transaction():
                    # The alert first: Alice's row is still flagged from before, and her read
                    # is clearing it (a count that skipped her row would lose the flag).
                    _, _, previous, _ = await tables.Room.message_context(conn, ROOM, BOB)
                    seq = await tables.Message.insert(
                        conn, "$alert", ROOM, BOB, 0, "m.text", "[ALERT] x", None, True
                    )
                    await tables.Ledger.on_message(conn, ROOM, seq, BOB, "Bob", True, [], previous)
                    await _message(conn, "$alice", ALICE, "Alice")

            reader = asyncio.create_task(read_bobs())
            await read.wait()
            writer = asyncio.create_task(count_two())
            await _until_blocked(db, writer, "count (after the read under way)")
            commit.set()
            assert await reader
            await writer
            alice = next(u for u in await tables.Ledger.unread(ALICE) if u.room_id == ROOM)
            assert (alice.count, alice.urgent) == (1, True)  # the alert only, flagged
            assert _count(await tables.Ledger.unread(BOB)) == 1  # Alice's reply

    asyncio.run(scenario())
