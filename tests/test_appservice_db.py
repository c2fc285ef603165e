"""The table modules on a real database, without Synapse: SQLite, then PostgreSQL (skipped
without AGENT_CHAT_TEST_POSTGRES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import asyncio
import secrets

from mautrix.util.async_db import Database

from agent_chat_appservice import db as tables

ALICE = "@alice:example.org"
KEY = bytes(range(32))


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    """The database as the service opens it: a pool on PostgreSQL, one writer on SQLite."""
    postgres = url.startswith("postgres")
    db = Database.create(
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
