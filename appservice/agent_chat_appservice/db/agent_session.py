"""Agent sessions: one row per (identity, session) as its hooks, wake waiter and session-end
hook report it, with its attention accounting (lines shown, characters injected, wakes)."""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Database

from .base import Table, now_ms


@dataclass
class AgentSession(Table):
    user_id: str
    session: str
    cli: str | None
    host: str | None
    repo: str | None
    started_ms: int
    seen_ms: int
    hook_ms: int | None
    ended_ms: int | None
    lines_shown: int = 0
    chars_injected: int = 0
    wakes: int = 0
    #: A wake waiter connected to some replica since then, believed until ``waiter_until_ms``
    #: (the replica holding it renews that; ``presence.py``).
    waiter_since_ms: int | None = None
    waiter_until_ms: int | None = None

    _columns = (
        "user_id, session, cli, host, repo, started_ms, seen_ms, hook_ms, ended_ms, "
        "lines_shown, chars_injected, wakes, waiter_since_ms, waiter_until_ms"
    )

    @classmethod
    async def heard(
        cls,
        conn: Connection | Database,
        user_id: str,
        session: str,
        cli: str | None,
        host: str | None,
        repo: str | None,
        hook: bool,
        at: int | None = None,
    ) -> None:
        """A sign of life from the session (a hook call when ``hook``, else its waiter): it is
        alive again even if it had ended (a resumed session keeps its id)."""
        at = now_ms() if at is None else at
        hook_ms = at if hook else None
        q = (
            "INSERT INTO agent_session (user_id, session, cli, host, repo, started_ms, seen_ms,"
            " hook_ms) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
            " ON CONFLICT (user_id, session) DO UPDATE SET"
            " cli=COALESCE(excluded.cli, agent_session.cli),"
            " host=COALESCE(excluded.host, agent_session.host),"
            " repo=COALESCE(excluded.repo, agent_session.repo),"
            " seen_ms=excluded.seen_ms,"
            " hook_ms=COALESCE(excluded.hook_ms, agent_session.hook_ms), ended_ms=NULL"
        )
        await conn.execute(q, user_id, session, cli, host, repo, at, hook_ms)

    @classmethod
    async def count(
        cls,
        conn: Connection | Database,
        user_id: str,
        session: str,
        lines: int,
        chars: int,
        wakes: int,
    ) -> None:
        q = (
            "UPDATE agent_session SET lines_shown=lines_shown + $3,"
            " chars_injected=chars_injected + $4, wakes=wakes + $5"
            " WHERE user_id=$1 AND session=$2"
        )
        await conn.execute(q, user_id, session, lines, chars, wakes)

    @classmethod
    async def waiting(cls, user_id: str, session: str, since_ms: int, until_ms: int) -> None:
        """A wake waiter of the session connected (to this replica) at ``since_ms``."""
        q = (
            "UPDATE agent_session SET waiter_since_ms=$3, waiter_until_ms=$4"
            " WHERE user_id=$1 AND session=$2"
        )
        await cls.db.execute(q, user_id, session, since_ms, until_ms)

    @classmethod
    async def renew_waiting(cls, leases: list[tuple[str, str, int, int]]) -> None:
        """``(user_id, session, lease written, new lease)``: each waiter this replica still
        holds is believed longer, unless another replica wrote the row since."""
        q = (
            "UPDATE agent_session SET waiter_until_ms=$4"
            " WHERE user_id=$1 AND session=$2 AND waiter_until_ms=$3"
        )
        await cls.db.executemany(q, leases)

    @classmethod
    async def stopped_waiting(cls, user_id: str, session: str, lease_ms: int) -> None:
        """This replica's waiter of the session left for good: the row's lease ends, unless
        another replica wrote it since (the waiter reconnected there)."""
        q = (
            "UPDATE agent_session SET waiter_until_ms=NULL"
            " WHERE user_id=$1 AND session=$2 AND waiter_until_ms=$3"
        )
        await cls.db.execute(q, user_id, session, lease_ms)

    @classmethod
    async def end(cls, user_id: str, session: str) -> bool:
        """The session ended (its CLI's session-end hook); whether it was known."""
        q = (
            "UPDATE agent_session SET ended_ms=$3, seen_ms=$3 WHERE user_id=$1 AND session=$2"
            " RETURNING session"
        )
        return await cls.db.fetchval(q, user_id, session, now_ms()) is not None

    @classmethod
    async def of_users(cls, user_ids: list[str], since_ms: int) -> list[AgentSession]:
        """These identities' sessions heard from since ``since_ms``, newest first."""
        if not user_ids:
            return []
        marks = ", ".join(f"${i + 2}" for i in range(len(user_ids)))
        q = (
            f"SELECT {cls._columns} FROM agent_session WHERE seen_ms>=$1"
            f" AND user_id IN ({marks}) ORDER BY seen_ms DESC"
        )
        rows = await cls.read_db.fetch(q, since_ms, *user_ids)
        return [cls(**{k: r[k] for k in cls._columns.split(", ")}) for r in rows]

    @classmethod
    async def recent(cls, since_ms: int, limit: int = 10000) -> list[AgentSession]:
        """Every session heard from since ``since_ms`` (for /metrics and presence)."""
        q = (
            f"SELECT {cls._columns} FROM agent_session WHERE seen_ms>=$1"
            " ORDER BY seen_ms DESC LIMIT $2"
        )
        rows = await cls.read_db.fetch(q, since_ms, limit)
        return [cls(**{k: r[k] for k in cls._columns.split(", ")}) for r in rows]
