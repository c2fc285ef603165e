"""Rooms the appservice knows, and the one direct chat per pair of users."""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Scheme

from .base import Row, Table, text_value

#: A member in the agent namespace (``@_ac_*``: agents, bots, the service's bot), joined or
#: invited: a room without one is nobody's business here (its messages are not stored).
#: For each room of ``ids`` in ``Room.message_contexts``.
AGENT_MEMBER = (
    "SELECT 1 FROM member WHERE room_id=ids.room_id AND membership IN ('join', 'invite')"
    " AND user_id LIKE '@\\_ac\\_%' ESCAPE '\\'"
)


@dataclass
class MessageContext:
    """A room as counting a message into it sees it (``Room.message_contexts``)."""

    alias: str | None
    #: An agent or bot is in the room: else its messages are not stored.
    agents: bool
    #: (user id, name) of whoever wrote last; moved on as messages are counted.
    last: tuple[str, str | None] | None

    def previous(self, sender: str) -> str | None:
        """The name of whoever wrote last if not ``sender`` (None: it was them, or nobody)."""
        return self.last[1] if self.last and self.last[0] != sender else None


def sender_name(sender: str, nicks: dict[str, str]) -> str | None:
    """A sender's name: an agent's nick, else the localpart of their user id (never a display
    name, which is others' free text and reaches agents in ``senders``)."""
    return nicks.get(sender) or sender[1:].split(":", 1)[0] or None


@dataclass
class Room(Table):
    room_id: str
    alias: str | None  # the alias' localpart ("general"), None for direct chats
    name: str | None = None
    topic: str | None = None
    is_direct: bool = False

    _columns = "room_id, alias, name, topic, is_direct"

    @classmethod
    def _from_row(cls, row: Row | None) -> Room | None:
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
    async def message_context(
        cls, conn: Connection, room_id: str, sender: str
    ) -> tuple[str | None, str | None, str | None, bool]:
        """For a message ``sender`` writes, as ``conn`` sees the room before it is counted: the
        room's alias, the sender's name (see ``sender_name``), the name of whoever wrote last
        if not the sender (None if it was them or nobody), and whether an agent or bot is in
        the room (else the message is not stored)."""
        rooms, nicks = await cls.message_contexts(conn, [room_id], [sender])
        room = rooms[room_id]
        return room.alias, sender_name(sender, nicks), room.previous(sender), room.agents

    @classmethod
    async def message_contexts(
        cls, conn: Connection, room_ids: list[str], senders: list[str]
    ) -> tuple[dict[str, MessageContext], dict[str, str]]:
        """What counting messages from ``senders`` into ``room_ids`` needs, as ``conn`` sees
        it before they are counted: each room's context, and the agents' and bots' nicks among
        the senders. One statement, however many: it is on the path of every message to a
        waiting agent (room ids start with ``!``, user ids with ``@``: one result holds
        both)."""
        args: list[object]
        if conn.scheme == Scheme.POSTGRES:  # arrays: one statement text, prepared once
            ids, args = "SELECT unnest($1::text[]) AS room_id", [room_ids, senders]
            users = "= ANY($2::text[])"
        else:
            marks = [f"(${i + 1})" for i in range(len(room_ids))]
            ids, args = f"VALUES {', '.join(marks)}", [*room_ids, *senders]
            users = f"IN ({', '.join(f'${len(room_ids) + i + 1}' for i in range(len(senders)))})"
        rows = await conn.fetch(
            f"WITH ids(room_id) AS ({ids})"
            " SELECT ids.room_id AS id, r.alias AS name, r.last_sender, r.last_sender_id,"
            f"  EXISTS ({AGENT_MEMBER}) AS agents"
            " FROM ids LEFT JOIN room r ON r.room_id=ids.room_id"
            " UNION ALL"
            " SELECT user_id, nick, NULL, NULL, false FROM identity"
            f" WHERE user_id {users} AND kind IN ('agent', 'bot')",
            *args,
        )
        rooms: dict[str, MessageContext] = {}
        nicks: dict[str, str] = {}
        for r in rows:
            if r["id"].startswith("!"):
                last = (r["last_sender_id"], r["last_sender"]) if r["last_sender_id"] else None
                rooms[r["id"]] = MessageContext(r["name"], bool(r["agents"]), last)
            elif r["name"]:
                nicks[r["id"]] = r["name"]
        return rooms, nicks

    @classmethod
    async def channels(cls, user_id: str) -> list[Channel]:
        """The rooms ``user_id`` has joined or is invited to, shared ones first, with their
        unread counts."""
        q = (
            "SELECT r.room_id, r.topic, r.is_direct, COALESCE(r.counted - u.base, 0) AS unread,"
            " m.membership,"
            " (SELECT COUNT(*) FROM member x WHERE x.room_id=r.room_id AND x.membership='join')"
            "   AS members"
            " FROM member m JOIN room r ON r.room_id=m.room_id"
            " LEFT JOIN unread u ON u.room_id=m.room_id AND u.user_id=m.user_id"
            " WHERE m.user_id=$1 AND m.membership IN ('join', 'invite')"
            " ORDER BY r.is_direct, r.alias, r.room_id"
        )
        return [
            Channel(
                r["room_id"],
                r["topic"],
                bool(r["is_direct"]),
                r["members"],
                r["unread"],
                r["membership"] == "invite",
            )
            for r in await cls.read_db.fetch(q, user_id)
        ]

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
    async def set_alias(cls, conn: Connection, room_id: str, alias: str | None) -> None:
        await cls.ensure(conn, room_id)
        if alias is not None:
            # An alias moved to another room: the old room loses it.
            await conn.execute(
                "UPDATE room SET alias=NULL WHERE alias=$1 AND room_id<>$2", alias, room_id
            )
        await conn.execute("UPDATE room SET alias=$2 WHERE room_id=$1", room_id, alias)

    @classmethod
    async def set_direct(cls, conn: Connection, room_id: str) -> None:
        await cls.ensure(conn, room_id, is_direct=True)
        await conn.execute("UPDATE room SET is_direct=true WHERE room_id=$1", room_id)


@dataclass
class Channel:
    """A room as ``ac channels`` lists it for one member."""

    room_id: str
    topic: str | None
    is_direct: bool
    members: int
    unread: int
    invited: bool = False  # invited, not joined yet: reading or sending there accepts


class DirectChat(Table):
    @staticmethod
    def _pair(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)

    @classmethod
    async def get(cls, a: str, b: str) -> str | None:
        user_a, user_b = cls._pair(a, b)
        q = "SELECT room_id FROM direct_chat WHERE user_a=$1 AND user_b=$2"
        return await text_value(cls.read_db, q, user_a, user_b)

    @classmethod
    async def set(cls, conn: Connection, a: str, b: str, room_id: str) -> None:
        user_a, user_b = cls._pair(a, b)
        q = (
            "INSERT INTO direct_chat (user_a, user_b, room_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_a, user_b) DO UPDATE SET room_id=excluded.room_id"
        )
        await conn.execute(q, user_a, user_b, room_id)
