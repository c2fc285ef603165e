"""Messages as Synapse delivered them; ``seq`` is the delivery order."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
import json

from mautrix.util.async_db import Connection, Database, Scheme

from .base import Table, int_value

# Bodies are stored JSON-encoded (ASCII escapes): PostgreSQL text cannot hold NUL or lone
# surrogates, and a hostile body must neither wedge the ledger nor be altered.


@dataclass
class Delivered:
    """A message as Synapse delivered it: the fields that ingest parses (``ingest``'s
    ``MessageRecord``), that are stored (``NewMessage``) and that are read (``Message``)."""

    event_id: str
    room_id: str
    sender: str
    ts: int
    msgtype: str
    body: str
    #: The root of the ``m.thread`` this message is in, and the message it answers.
    thread_id: str | None = None
    in_reply_to: str | None = None


@dataclass
class NewMessage(Delivered):
    """A message to store (``Message.insert_many``): as delivered, with what ingest found."""

    prefix: str | None = None
    urgent: bool = False


#: The stored columns, in ``NewMessage``'s order, and a row's values in that order.
COLUMNS = tuple(f.name for f in fields(NewMessage))
_values = attrgetter(*COLUMNS)
_BODY = COLUMNS.index("body")


@dataclass
class Message(NewMessage, Table):
    """A stored message: its ``seq`` (the delivery order) and its sender's name there."""

    seq: int = 0
    sender_name: str | None = None

    @classmethod
    async def recent_agent_messages(
        cls, room_id: str, thread: str | None, since_ms: int
    ) -> list[tuple[int, str, str]]:
        """(time in ms, sender, event id) of the agents' and bots' messages in a conversation
        (a room's main timeline, or one thread) since ``since_ms``, oldest first (the loop
        guard's)."""
        where_thread = "m.thread_id IS NULL" if thread is None else "m.thread_id=$3"
        q = (
            "SELECT m.ts, m.sender, m.event_id FROM message m "
            "JOIN identity i ON i.user_id=m.sender "
            f"WHERE m.room_id=$1 AND m.ts>=$2 AND {where_thread} "
            "AND i.kind IN ('agent', 'bot') ORDER BY m.seq LIMIT 1000"
        )
        args: tuple[object, ...] = (room_id, since_ms) + (() if thread is None else (thread,))
        rows = await cls.read_db.fetch(q, *args)
        return [(int(r["ts"]), str(r["sender"]), str(r["event_id"])) for r in rows]

    @classmethod
    async def insert(
        cls,
        conn: Connection,
        event_id: str,
        room_id: str,
        sender: str,
        ts: int,
        msgtype: str,
        body: str,
        prefix: str | None,
        urgent: bool,
        thread_id: str | None = None,
        in_reply_to: str | None = None,
    ) -> int | None:
        """Store a message; its seq, or None when this event was stored before."""
        row = NewMessage(
            event_id, room_id, sender, ts, msgtype, body, thread_id, in_reply_to, prefix, urgent
        )
        return (await cls.insert_many(conn, [row])).get(event_id)

    @classmethod
    async def insert_many(cls, conn: Connection, rows: list[NewMessage]) -> dict[str, int]:
        """Store messages in their order (seqs rise with it); the seq of each one stored now,
        by event id: an event stored before is left out (delivered again: counted before).
        Event ids must be distinct. On PostgreSQL one statement, whatever the number."""
        if not rows:
            return {}
        columns = ", ".join(COLUMNS)
        values = []
        for r in rows:
            value = _values(r)
            values.append((*value[:_BODY], json.dumps(r.body), *value[_BODY + 1 :]))
        if conn.scheme == Scheme.POSTGRES:
            # Arrays, not a VALUES list: one statement text whatever the count, so asyncpg
            # prepares it once. WITH ORDINALITY keeps the order, and so the seqs' order.
            q = (
                f"INSERT INTO message ({columns}) SELECT {columns} FROM unnest("
                "$1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],"
                " $7::text[], $8::text[], $9::text[], $10::boolean[])"
                f" WITH ORDINALITY AS v({columns}, n) ORDER BY n"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq"
            )
            found = await conn.fetch(q, *(list(c) for c in zip(*values, strict=True)))
            return {r["event_id"]: r["seq"] for r in found}
        # SQLite runs the transaction in its own thread (``sqlite.py``): a statement per row
        # costs no trip, and keeps the seqs in order without relying on RETURNING's order.
        q = (
            f"INSERT INTO message ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING seq"
        )
        seqs: dict[str, int] = {}
        for value in values:
            seq = await int_value(conn, q, *value)
            if seq is not None:
                seqs[value[0]] = seq
        return seqs

    @classmethod
    async def thread_of(cls, event_id: str) -> tuple[str, str, str | None] | None:
        """(room id, sender, thread root or None) of a stored message."""
        q = "SELECT room_id, sender, thread_id FROM message WHERE event_id=$1"
        row = await cls.read_db.fetchrow(q, event_id)
        return (row["room_id"], row["sender"], row["thread_id"]) if row else None

    @classmethod
    async def seq_of(cls, conn: Connection | Database, event_id: str) -> tuple[str, int] | None:
        """(room id, seq) of a stored message: on ``conn`` inside a transaction that may have
        stored it, or on ``cls.read_db``."""
        q = "SELECT room_id, seq FROM message WHERE event_id=$1"
        row = await conn.fetchrow(q, event_id)
        return (row["room_id"], row["seq"]) if row else None

    @classmethod
    async def seqs_of(cls, conn: Connection, event_ids: list[str]) -> dict[str, tuple[str, int]]:
        """(room id, seq) of each stored message among ``event_ids``, inside a transaction
        that may have stored them; one statement on PostgreSQL, whatever the number."""
        if conn.scheme == Scheme.POSTGRES:
            q = "SELECT event_id, room_id, seq FROM message WHERE event_id = ANY($1::text[])"
            rows = await conn.fetch(q, event_ids)
        else:  # SQLite: no trip to pay (``sqlite.py``), and no array type
            marks = ", ".join(f"${i + 1}" for i in range(len(event_ids)))
            q = f"SELECT event_id, room_id, seq FROM message WHERE event_id IN ({marks})"
            rows = await conn.fetch(q, *event_ids)
        return {r["event_id"]: (r["room_id"], r["seq"]) for r in rows}

    @classmethod
    async def rooms_with_messages(cls) -> list[str]:
        """Ids of the rooms holding at least one stored message."""
        q = (
            "SELECT r.room_id FROM room r"
            " WHERE EXISTS (SELECT 1 FROM message m WHERE m.room_id=r.room_id)"
        )
        return [r["room_id"] for r in await cls.read_db.fetch(q)]

    @classmethod
    async def read(
        cls,
        room_ids: list[str],
        after: dict[str, int],
        limit: int,
        oldest_first: bool = False,
        exclude_sender: str | None = None,
        thread: str | None = None,
    ) -> list[Message]:
        """Up to ``limit`` messages of these rooms after each room's seq, returned oldest first.

        ``oldest_first`` picks the oldest ones (reading unread messages in order), otherwise
        the newest ones (``--last N``). ``thread``: only that thread (its root and replies).
        """
        if not room_ids:
            return []
        conds, args = [], []
        for room_id in room_ids:
            args += [room_id, after.get(room_id, 0)]
            conds.append(f"(msg.room_id=${len(args) - 1} AND msg.seq>${len(args)})")
        where = "(" + " OR ".join(conds) + ")"
        if exclude_sender:
            args.append(exclude_sender)
            where += f" AND msg.sender<>${len(args)}"
        if thread:
            args.append(thread)
            where += f" AND (msg.thread_id=${len(args)} OR msg.event_id=${len(args)})"
        args.append(limit)
        order = "ASC" if oldest_first else "DESC"
        q = (
            "SELECT msg.seq, msg.event_id, msg.room_id, msg.sender, msg.ts, msg.msgtype, msg.body,"
            " msg.prefix, msg.urgent, msg.thread_id, msg.in_reply_to, mem.displayname"
            " FROM message msg"
            " LEFT JOIN member mem ON mem.room_id=msg.room_id AND mem.user_id=msg.sender"
            f" WHERE {where} ORDER BY msg.seq {order} LIMIT ${len(args)}"
        )
        rows = await cls.read_db.fetch(q, *args)
        if not oldest_first:
            rows = list(reversed(rows))
        return [
            cls(
                event_id=r["event_id"],
                room_id=r["room_id"],
                sender=r["sender"],
                ts=r["ts"],
                msgtype=r["msgtype"],
                body=_decode_body(r["body"]),
                thread_id=r["thread_id"],
                in_reply_to=r["in_reply_to"],
                prefix=r["prefix"],
                urgent=bool(r["urgent"]),
                seq=r["seq"],
                sender_name=r["displayname"],
            )
            for r in rows
        ]


def _decode_body(stored: str) -> str:
    """One corrupt row must not break reading the room for everyone."""
    try:
        body = json.loads(stored)
    except (TypeError, ValueError):
        return "[unreadable message]"
    return body if isinstance(body, str) else "[unreadable message]"
