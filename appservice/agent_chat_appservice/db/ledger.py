"""The unread ledger: per (user, room) unread count, urgent flag and read marker.

Synapse computes no unread counts for appservice users, so this table is the source of truth
for "what is new for me". Writers run inside the transaction that applies a homeserver
transaction, so a count changes exactly when its message is stored.

A message costs the same in a room of 3 members or 3,000: the room counts its messages
(``room.counted``) and each member's row keeps a ``base``, so that the member's unread count is
``room.counted - base``. Joining or reading sets the base; the sender's own message raises
theirs by one, since nobody has their own message unread. Only an urgent message or a mention
touches the rows of the members it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Scheme

from .base import Table, rows_changed
from .stage import Stage


@dataclass
class Unread:
    room_id: str
    count: int
    urgent: bool
    alias: str | None
    is_direct: bool
    other_user: str | None  # the other party of a direct chat
    other_name: str | None
    last_sender: str | None
    last_read_seq: int = 0  # the read marker: a read changes it, so a cursor sees it
    latest: int = 0  # the newest seq counted here for the user: grows only with news


@dataclass
class Counted:
    """A message being counted (``Ledger.on_messages``). ``previous``: who wrote last before
    the sender, as ``Room.message_contexts`` read it and the messages before this one moved
    it (None: the sender, or nobody)."""

    room_id: str
    seq: int
    sender: str
    sender_name: str
    urgent: bool
    mentioned: list[str]
    previous: str | None


class Ledger(Table):
    @classmethod
    async def on_join(cls, conn: Connection, room_id: str, user_id: str) -> None:
        """A new member starts with nothing unread: history before the join is not news."""
        q = (
            "INSERT INTO unread (user_id, room_id, base, urgent, last_read_seq) "
            "SELECT $1, $2, COALESCE((SELECT counted FROM room WHERE room_id=$2), 0), false, "
            "  COALESCE((SELECT MAX(seq) FROM message WHERE room_id=$2), 0) "
            "ON CONFLICT (user_id, room_id) DO NOTHING"
        )
        await conn.execute(q, user_id, room_id)
        await Stage.on_join(conn, room_id, user_id)

    @classmethod
    async def on_leave(cls, conn: Connection, room_id: str, user_id: str) -> None:
        await conn.execute("DELETE FROM unread WHERE user_id=$1 AND room_id=$2", user_id, room_id)
        await Stage.on_leave(conn, room_id, user_id)

    @classmethod
    async def on_message(
        cls,
        conn: Connection,
        room_id: str,
        seq: int,
        sender: str,
        sender_name: str,
        urgent: bool,
        mentioned: list[str],
        previous: str | None,
    ) -> None:
        """Count one message (``on_messages``)."""
        message = Counted(room_id, seq, sender, sender_name, urgent, mentioned, previous)
        await cls.on_messages(conn, [message])

    @classmethod
    async def on_messages(cls, conn: Connection, messages: list[Counted]) -> None:
        """Count messages, in their order, for every member but each one's sender: one write
        per room and one per (room, sender), whatever the number of messages or the rooms'
        sizes (see the module's docstring); on PostgreSQL each kind of write is one trip."""
        rooms: dict[str, tuple[int, str, str]] = {}  # → (count, last sender's name, id)
        senders: dict[tuple[str, str], tuple[int, str | None]] = {}  # → (count, previous)
        for m in messages:
            rooms[m.room_id] = (rooms.get(m.room_id, (0,))[0] + 1, m.sender_name, m.sender)
            n, previous = senders.get((m.room_id, m.sender), (0, None))
            previous = m.previous if m.previous is not None else previous
            senders[(m.room_id, m.sender)] = (n + 1, previous)
        # The rooms' rows first, in one order: mark_read takes the same lock before it
        # recounts, so a read never interleaves with the counting of a message (see there).
        q = (
            "INSERT INTO room (room_id, counted, last_sender, last_sender_id) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET "
            "counted=room.counted + excluded.counted, last_sender=excluded.last_sender, "
            "last_sender_id=excluded.last_sender_id"
        )
        await conn.executemany(q, [(r, *rooms[r]) for r in sorted(rooms)])
        # A sender's own messages are not unread for them, and whoever wrote before them is
        # who last wrote to them: kept in their row, for while the room's last writer is the
        # sender themselves.
        q = (
            "UPDATE unread SET base=base + $3, last_sender=COALESCE($4, last_sender) "
            "WHERE user_id=$2 AND room_id=$1"
        )
        await conn.executemany(q, [(*key, *senders[key]) for key in sorted(senders)])
        urgent = sorted({(m.room_id, m.sender) for m in messages if m.urgent})
        if urgent:  # rare ([ALERT], @room): worth a write per member
            q = "UPDATE unread SET urgent=true WHERE room_id=$1 AND user_id<>$2 AND NOT urgent"
            await conn.executemany(q, urgent)
        mentions = [
            (m.room_id, m.seq, m.sender, user_id)
            for m in messages
            if not m.urgent
            for user_id in m.mentioned
        ]
        if mentions:
            await conn.executemany(
                "INSERT INTO mention (room_id, seq, user_id) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(room_id, seq, user_id) for room_id, seq, _, user_id in mentions],
            )
            await conn.executemany(
                "UPDATE unread SET urgent=true WHERE room_id=$1 AND user_id=$3 AND user_id<>$2",
                sorted({(room_id, sender, user_id) for room_id, _, sender, user_id in mentions}),
            )

    @classmethod
    async def mark_read(
        cls,
        conn: Connection,
        user_id: str,
        room_id: str,
        seq: int,
        event_id: str,
        shown_from: int | None = None,
    ) -> bool:
        """Move the read marker forward to ``seq``; what others wrote after it stays unread.

        ``shown_from``: the reader was shown this room's messages from that seq to ``seq``
        only. The marker then moves only if nobody else wrote between it and ``shown_from``:
        it never passes a message the reader has not seen (``ac listen --last N``).

        Returns False when the marker did not move: already at or past ``seq`` (receipts may
        echo back), or a message the reader was not shown lies before ``shown_from``. A move
        is the reader's ``read`` stage too (``stage.py``), in the same transaction.
        """
        if conn.scheme != Scheme.SQLITE:
            # Wait for a message being counted in this room to commit: recounting from an
            # older snapshot while it raises the reader's own base (their message) would undo
            # that raise. SQLite runs one writer at a time anyway.
            await conn.execute("SELECT 1 FROM room WHERE room_id=$1 FOR SHARE", room_id)
        q = (
            "UPDATE unread SET last_read_seq=$3, last_read_event=$4, "
            "base=(SELECT counted FROM room WHERE room_id=$2) "
            "  - (SELECT COUNT(*) FROM message m WHERE m.room_id=$2 AND m.seq>$3 "
            "     AND m.sender<>$1), "
            "urgent=(EXISTS (SELECT 1 FROM message m WHERE m.room_id=$2 AND m.seq>$3 "
            "                AND m.sender<>$1 AND m.urgent) "
            "        OR EXISTS (SELECT 1 FROM mention x WHERE x.room_id=$2 AND x.seq>$3 "
            "                   AND x.user_id=$1)) "
            "WHERE user_id=$1 AND room_id=$2 AND last_read_seq<$3"
        )
        args: list[object] = [user_id, room_id, seq, event_id]
        if shown_from is not None:
            q += (
                " AND NOT EXISTS (SELECT 1 FROM message m WHERE m.room_id=$2"
                " AND m.seq>unread.last_read_seq AND m.seq<$5 AND m.sender<>$1)"
            )
            args.append(shown_from)
        result = await conn.execute(q, *args)
        if rows_changed(result) == 0:
            return False
        await Stage.record(conn, user_id, room_id, "read", seq)
        return True

    @classmethod
    async def read_positions(
        cls, conn: Connection, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The read marker of each (user, room) with a ledger row, as ``conn`` sees it: a
        receipt at or before it is an echo, with nothing to lock or write (markers only move
        forward, so what this read says "done" stays done)."""
        users, rooms = sorted({u for u, _ in pairs}), sorted({r for _, r in pairs})
        if conn.scheme == Scheme.POSTGRES:
            q = (
                "SELECT user_id, room_id, last_read_seq FROM unread"
                " WHERE user_id = ANY($1::text[]) AND room_id = ANY($2::text[])"
            )
            rows = await conn.fetch(q, users, rooms)
        else:
            marks = [f"${i + 1}" for i in range(len(users) + len(rooms))]
            q = (
                "SELECT user_id, room_id, last_read_seq FROM unread"
                f" WHERE user_id IN ({', '.join(marks[: len(users)])})"
                f" AND room_id IN ({', '.join(marks[len(users) :])})"
            )
            rows = await conn.fetch(q, *users, *rooms)
        return {(r["user_id"], r["room_id"]): r["last_read_seq"] for r in rows}

    @classmethod
    async def read_markers(cls, user_id: str, room_ids: list[str]) -> dict[str, int]:
        q = "SELECT room_id, last_read_seq FROM unread WHERE user_id=$1"
        wanted = set(room_ids)
        return {
            r["room_id"]: r["last_read_seq"]
            for r in await cls.read_db.fetch(q, user_id)
            if r["room_id"] in wanted
        }

    @classmethod
    async def unread(cls, user_id: str) -> list[Unread]:
        """Rooms with something unread for the user; cost grows with their rooms, not history."""
        q = (
            "SELECT u.room_id, r.counted - u.base AS count, u.urgent, r.alias, r.is_direct,"
            " CASE WHEN r.last_sender_id<>$1 THEN r.last_sender ELSE u.last_sender END"
            "   AS last_sender,"
            " (SELECT o.user_id FROM member o WHERE o.room_id=u.room_id AND o.user_id<>$1"
            "   AND o.membership IN ('join', 'invite') ORDER BY o.user_id LIMIT 1) AS other_user,"
            " u.last_read_seq,"
            " (SELECT m.seq FROM message m WHERE m.room_id=u.room_id AND m.seq>u.last_read_seq"
            "   AND m.sender<>$1 ORDER BY m.seq DESC LIMIT 1) AS latest"
            " FROM unread u JOIN room r ON r.room_id=u.room_id"
            " WHERE u.user_id=$1 AND r.counted>u.base ORDER BY r.is_direct, r.alias, u.room_id"
        )
        rows = await cls.read_db.fetch(q, user_id)
        result = []
        for r in rows:
            result.append(
                Unread(
                    room_id=r["room_id"],
                    count=r["count"],
                    urgent=bool(r["urgent"]),
                    alias=r["alias"],
                    is_direct=bool(r["is_direct"]),
                    other_user=r["other_user"] if r["is_direct"] else None,
                    other_name=None,
                    last_sender=r["last_sender"],
                    last_read_seq=r["last_read_seq"] or 0,
                    latest=r["latest"] or 0,
                )
            )
        return result

    @classmethod
    async def members(cls, room_ids: list[str]) -> set[str]:
        """Who has a ledger row in these rooms: whose counts a change there may move."""
        q = "SELECT user_id FROM unread WHERE room_id=$1"
        found: set[str] = set()
        for room_id in room_ids:
            found.update(r["user_id"] for r in await cls.read_db.fetch(q, room_id))
        return found
