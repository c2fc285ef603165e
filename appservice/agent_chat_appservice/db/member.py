"""Room membership as the homeserver reported it (m.room.member state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
import time

from mautrix.util.async_db import Connection

from .base import Table, text_value

#: Members outside the agent namespace (``@_ac_*``). Must match the partial index
#: ``member_people_idx`` (upgrade v03) word for word, or the planners will not use it.
NOT_AGENT = "user_id NOT LIKE '@\\_ac\\_%' ESCAPE '\\'"
#: How long a room's people may be answered from memory. Recording a membership drops the
#: room's entry, so the only staleness is a read racing a join's commit: for at most this long,
#: a message naming a human who just joined may go without m.mentions (a legacy name ping).
PEOPLE_CACHE_SECONDS = 2.0


@dataclass
class Member(Table):
    _people: ClassVar[dict[str, tuple[float, list[tuple[str, str | None]]]]] = {}

    room_id: str
    user_id: str
    displayname: str | None
    kind: str | None  # from identity; None for people the appservice has not registered
    last_active: int | None

    @classmethod
    async def set(
        cls,
        conn: Connection,
        room_id: str,
        user_id: str,
        membership: str,
        displayname: str | None,
    ) -> None:
        q = (
            "INSERT INTO member (room_id, user_id, membership, displayname) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) "
            "DO UPDATE SET membership=excluded.membership, displayname=excluded.displayname"
        )
        await conn.execute(q, room_id, user_id, membership, displayname)
        cls._people.pop(room_id, None)

    @classmethod
    async def is_joined(cls, room_id: str, user_id: str) -> bool:
        q = "SELECT 1 FROM member WHERE room_id=$1 AND user_id=$2 AND membership='join'"
        return bool(await cls.read_db.fetchval(q, room_id, user_id))

    @classmethod
    async def membership(cls, room_id: str, user_id: str) -> str | None:
        """join, invite, leave, ban or knock; None when the room never had this user."""
        q = "SELECT membership FROM member WHERE room_id=$1 AND user_id=$2"
        value = await cls.read_db.fetchval(q, room_id, user_id)
        return str(value) if value is not None else None

    @classmethod
    async def invited_direct_rooms(cls, user_id: str) -> list[str]:
        """Direct chats ``user_id`` is invited to and has not joined (nor refused)."""
        q = (
            "SELECT m.room_id FROM member m JOIN room r ON r.room_id=m.room_id "
            "WHERE m.user_id=$1 AND m.membership='invite' AND r.is_direct"
        )
        return [r["room_id"] for r in await cls.read_db.fetch(q, user_id)]

    @classmethod
    async def joined_rooms(cls, user_id: str) -> list[str]:
        q = "SELECT room_id FROM member WHERE user_id=$1 AND membership='join'"
        return [r["room_id"] for r in await cls.read_db.fetch(q, user_id)]

    @classmethod
    async def joined_user_ids(cls, room_id: str) -> list[str]:
        q = "SELECT user_id FROM member WHERE room_id=$1 AND membership='join' ORDER BY user_id"
        return [r["user_id"] for r in await cls.read_db.fetch(q, room_id)]

    @classmethod
    async def anyone_but(cls, room_id: str, user_id: str) -> str | None:
        """Some member of the room other than ``user_id``, whatever their membership."""
        q = "SELECT user_id FROM member WHERE room_id=$1 AND user_id<>$2 LIMIT 1"
        return await text_value(cls.read_db, q, room_id, user_id)

    @classmethod
    async def joined(cls, room_id: str) -> list[Member]:
        q = (
            "SELECT m.room_id, m.user_id, m.displayname, i.kind, i.last_active FROM member m "
            "LEFT JOIN identity i ON i.user_id = m.user_id "
            "WHERE m.room_id=$1 AND m.membership='join' ORDER BY m.user_id"
        )
        return [
            cls(r["room_id"], r["user_id"], r["displayname"], r["kind"], r["last_active"])
            for r in await cls.read_db.fetch(q, room_id)
        ]

    @classmethod
    async def people(cls, room_id: str, cached: bool = True) -> list[tuple[str, str | None]]:
        """(user_id, display name) of joined members outside the agent namespace: the humans
        (and other clients' bots) whose push rules Synapse evaluates. Through a partial index,
        so a room of 1,000 agents costs nothing here; kept briefly in memory (one read less
        per send; ``cached=False`` reads the table)."""
        now = time.monotonic()
        kept = cls._people.get(room_id) if cached else None
        if kept and now - kept[0] < PEOPLE_CACHE_SECONDS:
            return kept[1]
        q = (
            "SELECT user_id, displayname FROM member "
            f"WHERE room_id=$1 AND membership='join' AND {NOT_AGENT}"
        )
        people = [(r["user_id"], r["displayname"]) for r in await cls.read_db.fetch(q, room_id)]
        if len(cls._people) > 10000:
            cls._people.clear()
        cls._people[room_id] = (now, people)
        return people

    @classmethod
    async def name_of(cls, user_id: str) -> str | None:
        q = "SELECT displayname FROM member WHERE user_id=$1 AND displayname IS NOT NULL LIMIT 1"
        return await text_value(cls.read_db, q, user_id)
