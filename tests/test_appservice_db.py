"""The table modules on a real database, without Synapse: SQLite, then PostgreSQL (skipped
without AGENT_CHAT_TEST_POSTGRES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
import asyncio
import secrets

from mautrix.util.async_db import Connection, Database
import pytest

from agent_chat_appservice import db as tables

ALICE = "@alice:example.org"
KEY = bytes(range(32))


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    """The database as the service opens it: a pool on PostgreSQL, one writer on SQLite."""
    postgres = url.startswith("postgres")
    db = tables.create(
        url,
        upgrade_table=tables.upgrade_table,
        db_args={"min_size": 1, "max_size": 10} if postgres else {"min_size": 1},
    )
    tables.use_key(KEY)
    await db.start()
    tables.init(db)
    try:
        yield db
    finally:
        await db.stop()


async def _identity_rows(db: Database, user_id: str) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT nick, nick_key FROM identity WHERE user_id=$1", user_id)
    return [(r["nick"], r["nick_key"]) for r in rows]


def test_concurrent_logins_of_one_human_make_one_identity(database_url: str) -> None:
    """Two `ac login`s of a new human at once: both succeed, one identity results (a
    read-then-insert lets both insert, and the second hits the unique index)."""

    async def scenario() -> None:
        async with _database(database_url) as db:
            tokens = [f"syt_alice_{i}" for i in range(12)]
            found = await asyncio.gather(
                *(tables.Identity.upsert_human(ALICE, "alice", t) for t in tokens)
            )
            assert {(i.user_id, i.nick, i.kind) for i in found} == {(ALICE, "alice", "human")}
            assert await _identity_rows(db, ALICE) == [("alice", "alice")]
            assert (await tables.Identity.matrix_tokens())[ALICE] in tokens
            # A later login keeps the identity and stores the new Matrix token.
            again = await tables.Identity.upsert_human(ALICE, "alice", "syt_alice_new")
            assert again.created_at == found[0].created_at
            assert (await tables.Identity.matrix_tokens())[ALICE] == "syt_alice_new"

    asyncio.run(scenario())


def test_a_human_whose_name_an_agent_holds_answers_to_their_user_id(database_url: str) -> None:
    async def scenario() -> None:
        async with _database(database_url) as db:
            agent = tables.Identity("@_ac_alice:example.org", "Alice", "agent", tables.now_ms())
            await agent.insert()
            found = await asyncio.gather(
                *(tables.Identity.upsert_human(ALICE, "alice", f"syt_{i}") for i in range(8))
            )
            assert {i.nick for i in found} == {"alice"}
            assert await _identity_rows(db, ALICE) == [("alice", ALICE)]
            assert (await tables.Identity.get_by_nick("alice")) == agent

    asyncio.run(scenario())


def test_a_humans_matrix_token_is_stored_sealed_for_them_only(database_url: str) -> None:
    async def scenario() -> None:
        async with _database(database_url) as db:
            alice_token, bob_token = (f"syt_{secrets.token_urlsafe(16)}" for _ in range(2))
            await tables.Identity.upsert_human(ALICE, "alice", alice_token)
            stored = await db.fetchval("SELECT matrix_token FROM identity WHERE user_id=$1", ALICE)
            assert alice_token not in stored and stored.startswith("ac1:")
            assert await tables.Identity.matrix_tokens() == {ALICE: alice_token}
            # Copied onto another human's row, it does not open: the owner is sealed in.
            bob = "@bob:example.org"
            await tables.Identity.upsert_human(bob, "bob", bob_token)
            q = "UPDATE identity SET matrix_token=$2 WHERE user_id=$1"
            await db.execute(q, bob, stored)
            assert await tables.Identity.matrix_tokens() == {ALICE: alice_token}

    asyncio.run(scenario())


async def _claimed(db: Database) -> list[str]:
    return [r["txn_id"] for r in await db.fetch("SELECT txn_id FROM hs_transaction ORDER BY 1")]


def test_run_transaction_commits_whole_or_nothing(database_url: str) -> None:
    """The homeserver transactions' path (on SQLite in one trip to the connection's thread):
    what the work wrote is committed with its result; work that raises leaves nothing, and
    the connection is fit for the next transaction."""

    async def scenario() -> None:
        async with _database(database_url) as db:

            async def claim_two(conn: Connection) -> int:
                await tables.HSTransaction.claim(conn, "t1", "d1")
                await tables.HSTransaction.claim(conn, "t2", "d2")
                return len(await conn.fetch("SELECT txn_id FROM hs_transaction"))

            assert await tables.run_transaction(claim_two) == 2

            async def claim_then_fail(conn: Connection) -> None:
                await tables.HSTransaction.claim(conn, "t3", "d3")
                raise ValueError("the apply failed half-way")

            with pytest.raises(ValueError, match="half-way"):
                await tables.run_transaction(claim_then_fail)
            assert await _claimed(db) == ["t1", "t2"]
            # An exact repeat claims nothing; the connection commits again.
            assert not await tables.run_transaction(
                lambda conn: tables.HSTransaction.claim(conn, "t1", "d1")
            )
            assert await tables.run_transaction(
                lambda conn: tables.HSTransaction.claim(conn, "t4", "d4")
            )
            assert await _claimed(db) == ["t1", "t2", "t4"]

    asyncio.run(scenario())


def test_a_transaction_in_the_sqlite_thread_may_not_await_anything_else(tmp_path: Path) -> None:
    """On SQLite the work runs in the connection's thread, where no event loop turns: work that
    awaits anything but the connection is refused and rolled back, not left hanging."""

    async def scenario() -> None:
        async with _database(f"sqlite:{tmp_path / 'appservice.db'}") as db:

            async def claim_then_sleep(conn: Connection) -> None:
                await tables.HSTransaction.claim(conn, "t1", "d1")
                await asyncio.sleep(0)

            with pytest.raises(RuntimeError, match="awaited something else"):
                await tables.run_transaction(claim_then_sleep)
            assert await _claimed(db) == []
            assert await tables.run_transaction(
                lambda conn: tables.HSTransaction.claim(conn, "t2", "d2")
            )
            assert await _claimed(db) == ["t2"]

    asyncio.run(scenario())


def test_importing_the_tables_changes_nothing_in_mautrix_for_others() -> None:
    """The one-trip SQLite pool is asked for by name (``db.create``): a plain
    ``Database.create`` elsewhere in the process still gets mautrix's own connections."""
    from mautrix.util.async_db import aiosqlite as mautrix_sqlite

    from agent_chat_appservice.db.sqlite import OneTripConnection, OneTripSQLiteDatabase

    assert mautrix_sqlite.TxnConnection is not OneTripConnection
    assert type(Database.create("sqlite::memory:")) is mautrix_sqlite.SQLiteDatabase
    assert type(tables.create("sqlite::memory:")) is OneTripSQLiteDatabase
