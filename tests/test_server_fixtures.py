"""The harness's own fixtures work (PostgreSQL ones skip without AGENT_CHAT_TEST_POSTGRES)."""

from __future__ import annotations

import asyncio
import os

from helpers import Stack, http_json


def test_any_stack_is_healthy(any_stack: Stack) -> None:
    status, body = http_json("GET", f"{any_stack.api_base}/health")
    assert status == 200, body
    assert any_stack.api_base == any_stack.api_url + "/_agent_chat/v1"
    assert any_stack.data_dir.is_dir() and any_stack.registration_token


def test_pg_stack_uses_postgres(pg_stack: Stack) -> None:
    assert pg_stack.config.database.startswith("postgres://")
    assert not (pg_stack.data_dir / "appservice.db").exists()


def test_pg_url_is_a_fresh_database(pg_url: str) -> None:
    import asyncpg

    async def tables() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(tables()) == 0


def test_agent_home_is_set(agent_home: os.PathLike[str]) -> None:
    assert os.environ["AGENT_CHAT_HOME"] == str(agent_home)
