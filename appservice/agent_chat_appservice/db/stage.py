"""Delivery stages: how far each recipient got with a room's messages.

Per (recipient, room) and stage, a high-water position in stream order (a message ``seq``):
every message at or below it has reached that stage for that recipient. Stages, in order:

- ``counted``: in the recipient's ledger (every member with a ledger row when it arrived);
- ``shown``: a line naming the room, with a count covering it, was put into the recipient's
  model context (a hook, a wake line, MCP notify), with the session and CLI that showed it;
- ``woken``: a wake started a turn because of it;
- ``read``: its body was returned to the recipient, or a human's read receipt covers it.

Rows are written when a recipient acts (one upsert per room it acted on), never when a message
arrives. ``joined`` (not a stage) keeps the stream position at the member's first join, so a
member who joined after a message is not counted among its recipients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mautrix.util.async_db import Connection, Database

from .base import Table, now_ms, rows_changed

#: Delivery stages after ``counted``, in order.
STAGES = ("shown", "woken", "read")
ORDER = ("counted", *STAGES)


@dataclass
class Reached:
    """One stage a recipient reached for a message."""

    at: int | None  # ms; None for a read marker older than the stage table
    session: str | None = None
    cli: str | None = None


@dataclass
class Recipient:
    user_id: str
    stages: dict[str, Reached] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        """The furthest stage reached."""
        return max(self.stages, key=ORDER.index, default="counted")


class Stage(Table):
    @classmethod
    async def record(
        cls,
        conn: Connection | Database,
        user_id: str,
        room_id: str,
        stage: str,
        pos: int,
        session: str | None = None,
        cli: str | None = None,
        at: int | None = None,
    ) -> bool:
        """Move ``stage`` forward to ``pos`` for ``user_id`` in ``room_id``; whether it moved.
        Never backwards: a late or repeated report changes nothing."""
        q = (
            "INSERT INTO stage (user_id, room_id, stage, stream_pos, at_ms, session, cli) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, user_id, stage) DO UPDATE "
            "SET stream_pos=excluded.stream_pos, at_ms=excluded.at_ms, "
            "session=excluded.session, cli=excluded.cli "
            "WHERE stage.stream_pos < excluded.stream_pos"
        )
        at = now_ms() if at is None else at
        result = await conn.execute(q, user_id, room_id, stage, pos, at, session, cli)
        return rows_changed(result) > 0

    @classmethod
    async def on_join(cls, conn: Connection, room_id: str, user_id: str) -> None:
        """Remember where the member's first join was: messages before it were not theirs."""
        q = (
            "INSERT INTO stage (user_id, room_id, stage, stream_pos, at_ms) "
            "SELECT $1, $2, 'joined', COALESCE(MAX(seq), 0), $3 FROM message WHERE room_id=$2 "
            "ON CONFLICT (room_id, user_id, stage) DO NOTHING"
        )
        await conn.execute(q, user_id, room_id, now_ms())

    @classmethod
    async def on_leave(cls, conn: Connection, room_id: str, user_id: str) -> None:
        await conn.execute("DELETE FROM stage WHERE user_id=$1 AND room_id=$2", user_id, room_id)

    @classmethod
    async def message(cls, event_id: str) -> tuple[str, str, int, int] | None:
        """(room id, sender, seq, ts) of a stored message."""
        q = "SELECT room_id, sender, seq, ts FROM message WHERE event_id=$1"
        row = await cls.read_db.fetchrow(q, event_id)
        return (row["room_id"], row["sender"], row["seq"], row["ts"]) if row else None

    @classmethod
    async def last_sent(cls, user_id: str, room_ids: list[str]) -> str | None:
        """The event id of the caller's newest message in these rooms (one indexed look per
        room: the newest of theirs there)."""
        q = (
            "SELECT seq, event_id FROM message WHERE room_id=$2 AND sender=$1"
            " ORDER BY seq DESC LIMIT 1"
        )
        best: tuple[int, str] | None = None
        for room_id in room_ids:
            row = await cls.read_db.fetchrow(q, user_id, room_id)
            if row is not None and (best is None or row["seq"] > best[0]):
                best = (int(row["seq"]), str(row["event_id"]))
        return best[1] if best else None

    @classmethod
    async def positions(cls, user_id: str, room_ids: list[str]) -> dict[str, int]:
        """The newest message seq in each of these rooms where ``user_id`` has a ledger row
        (rooms it is not in are left out): what a report may claim at most."""
        found: dict[str, int] = {}
        q = (
            "SELECT COALESCE((SELECT MAX(seq) FROM message WHERE room_id=$2), 0) AS top "
            "FROM unread WHERE user_id=$1 AND room_id=$2"
        )
        for room_id in room_ids:
            row = await cls.read_db.fetchrow(q, user_id, room_id)
            if row is not None:
                found[room_id] = int(row["top"])
        return found

    @classmethod
    async def recipients(
        cls, room_id: str, seq: int, ts: int, sender: str, only: set[str] | None = None
    ) -> list[Recipient]:
        """The message's recipients (the room's members with a ledger row, but the sender and
        who joined after it) and the stages each reached; ``only``: these users."""
        q = (
            "SELECT u.user_id, u.last_read_seq, s.stage, s.stream_pos, s.at_ms, s.session, s.cli"
            " FROM unread u LEFT JOIN stage s ON s.room_id=u.room_id AND s.user_id=u.user_id"
            " WHERE u.room_id=$1 AND u.user_id<>$2 ORDER BY u.user_id"
        )
        rows = await cls.read_db.fetch(q, room_id, sender)
        found: dict[str, Recipient] = {}
        late: set[str] = set()
        for r in rows:
            user_id = r["user_id"]
            if only is not None and user_id not in only:
                continue
            recipient = found.get(user_id)
            if recipient is None:
                recipient = found[user_id] = Recipient(user_id, {"counted": Reached(ts)})
                if (r["last_read_seq"] or 0) >= seq:
                    recipient.stages["read"] = Reached(None)  # a marker from before stages
            stage, pos = r["stage"], r["stream_pos"]
            if stage is None or pos is None or pos < seq:
                continue
            if stage == "joined":
                late.add(user_id)
            elif stage in STAGES:
                recipient.stages[stage] = Reached(r["at_ms"], r["session"], r["cli"])
        for recipient in found.values():
            # A later stage implies the earlier ones (a wake line is a line shown).
            if "woken" in recipient.stages and "shown" not in recipient.stages:
                recipient.stages["shown"] = recipient.stages["woken"]
        return [r for user_id, r in found.items() if user_id not in late]
