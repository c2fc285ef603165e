"""Claims on files: who holds which pattern of which project, how, why and until when.

A claim or release runs in one transaction that starts with :meth:`Claim.lock_project`: on
PostgreSQL the project's row stays locked until the transaction ends, so two agents racing for
one pattern are served one after the other (SQLite has a single writer connection anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Database

from .base import Row, Table

_COLUMNS = "project, user_id, pattern, exclusive, reason, created_at, expires_at"


@dataclass
class Claim(Table):
    project: str
    user_id: str
    pattern: str
    exclusive: bool
    reason: str | None
    created_at: int
    expires_at: int

    @classmethod
    def _from_row(cls, row: Row) -> Claim:
        return cls(
            row["project"],
            row["user_id"],
            row["pattern"],
            bool(row["exclusive"]),
            row["reason"],
            int(row["created_at"]),
            int(row["expires_at"]),
        )

    @staticmethod
    async def lock_project(conn: Connection, project: str) -> None:
        """Take the project's lock for the rest of the transaction (and note the project)."""
        q = (
            "INSERT INTO claim_project (project, version) VALUES ($1, 1) "
            "ON CONFLICT (project) DO UPDATE SET version=claim_project.version+1"
        )
        await conn.execute(q, project)

    @classmethod
    async def known_projects(cls) -> set[str]:
        rows = await cls.read_db.fetch("SELECT project FROM claim_project")
        return {r["project"] for r in rows}

    @classmethod
    async def active(
        cls, project: str, now: int, conn: Connection | Database | None = None
    ) -> list[Claim]:
        """The project's claims that have not expired, oldest first."""
        q = (
            f"SELECT {_COLUMNS} FROM claim WHERE project=$1 AND expires_at>$2 "
            "ORDER BY created_at, user_id, pattern"
        )
        rows = await (conn or cls.read_db).fetch(q, project, now)
        return [cls._from_row(r) for r in rows]

    @classmethod
    async def any_expired(cls, project: str, now: int) -> bool:
        q = "SELECT 1 FROM claim WHERE project=$1 AND expires_at<=$2 LIMIT 1"
        return await cls.read_db.fetchval(q, project, now) is not None

    @classmethod
    async def remove_expired(cls, conn: Connection, project: str, now: int) -> list[Claim]:
        """Delete the project's expired claims; what was deleted."""
        q = f"SELECT {_COLUMNS} FROM claim WHERE project=$1 AND expires_at<=$2"
        gone = [cls._from_row(r) for r in await conn.fetch(q, project, now)]
        if gone:
            await conn.execute(
                "DELETE FROM claim WHERE project=$1 AND expires_at<=$2", project, now
            )
        return gone

    @classmethod
    async def of_agent(
        cls, conn: Connection | Database, project: str, user_id: str
    ) -> list[Claim]:
        q = f"SELECT {_COLUMNS} FROM claim WHERE project=$1 AND user_id=$2 ORDER BY pattern"
        return [cls._from_row(r) for r in await conn.fetch(q, project, user_id)]

    async def upsert(self, conn: Connection) -> None:
        q = (
            f"INSERT INTO claim ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (project, user_id, pattern) DO UPDATE SET exclusive=excluded.exclusive,"
            " reason=excluded.reason, created_at=excluded.created_at,"
            " expires_at=excluded.expires_at"
        )
        await conn.execute(
            q,
            self.project,
            self.user_id,
            self.pattern,
            self.exclusive,
            self.reason,
            self.created_at,
            self.expires_at,
        )

    async def delete(self, conn: Connection) -> None:
        q = "DELETE FROM claim WHERE project=$1 AND user_id=$2 AND pattern=$3"
        await conn.execute(q, self.project, self.user_id, self.pattern)
