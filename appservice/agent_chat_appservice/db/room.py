"""Rooms the appservice knows, and the one direct chat per pair of users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mautrix.util.async_db import Connection, Database


@dataclass
class Room:
    db: ClassVar[Database]
    read_db: ClassVar[
        Database
    ]  # reads: a separate pool on SQLite, so they never queue behind writes

    room_id: str
    alias: str | None  # the alias' localpart ("general"), None for direct chats
    name: str | None = None
    topic: str | None = None
    is_direct: bool = False

    _columns = "room_id, alias, name, topic, is_direct"

    @classmethod
    def _from_row(cls, row) -> Room | None:
        if row is None:
            return None
        return cls(row["room_id"], row["alias"], row["name"], row["topic"], bool(row["is_direct"]))

    @classmethod
    async def get(cls, room_id: str) -> Room | None:
        q = f"SELECT {cls._columns} FROM room WHERE room_id=$1"
        return cls._from_row(await cls.read_db.fetchrow(q, room_id))

    @classmethod
    async def get_by_alias(cls, alias: str) -> Room | None:
        q = f"SELECT {cls._columns} FROM room WHERE alias=$1"
        return cls._from_row(await cls.read_db.fetchrow(q, alias))

    @classmethod
    async def ensure(cls, conn: Connection, room_id: str, is_direct: bool = False) -> None:
        q = (
            "INSERT INTO room (room_id, is_direct) VALUES ($1, $2) "
            "ON CONFLICT (room_id) DO NOTHING"
        )
        await conn.execute(q, room_id, is_direct)

    @classmethod
    async def set_field(
        cls, conn: Connection, room_id: str, field: str, value: str | None
    ) -> None:
        assert field in ("name", "topic")
        await cls.ensure(conn, room_id)
        await conn.execute(f"UPDATE room SET {field}=$2 WHERE room_id=$1", room_id, value)

    @classmethod
    async def set_alias(cls, conn: Connection | None, room_id: str, alias: str | None) -> None:
        conn = conn or cls.db
        await cls.ensure(conn, room_id)
        if alias is not None:
            # An alias moved to another room: the old room loses it.
            await conn.execute(
                "UPDATE room SET alias=NULL WHERE alias=$1 AND room_id<>$2", alias, room_id
            )
        await conn.execute("UPDATE room SET alias=$2 WHERE room_id=$1", room_id, alias)

    @classmethod
    async def set_direct(cls, conn: Connection | None, room_id: str) -> None:
        conn = conn or cls.db
        await cls.ensure(conn, room_id, is_direct=True)
        await conn.execute("UPDATE room SET is_direct=true WHERE room_id=$1", room_id)


class DirectChat:
    db: ClassVar[Database]
    read_db: ClassVar[
        Database
    ]  # reads: a separate pool on SQLite, so they never queue behind writes

    @staticmethod
    def _pair(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)

    @classmethod
    async def get(cls, a: str, b: str) -> str | None:
        user_a, user_b = cls._pair(a, b)
        q = "SELECT room_id FROM direct_chat WHERE user_a=$1 AND user_b=$2"
        return await cls.read_db.fetchval(q, user_a, user_b)

    @classmethod
    async def set(cls, conn: Connection | None, a: str, b: str, room_id: str) -> None:
        user_a, user_b = cls._pair(a, b)
        q = (
            "INSERT INTO direct_chat (user_a, user_b, room_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_a, user_b) DO UPDATE SET room_id=excluded.room_id"
        )
        await (conn or cls.db).execute(q, user_a, user_b, room_id)
