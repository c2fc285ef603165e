"""Inbound webhooks, the deliveries they already posted, and their last posted states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Row, Table, now_ms, rows_changed, text_value, transaction


@dataclass
class Webhook(Table):
    hook_id: str
    name: str
    user_id: str
    room_id: str
    signing_secret: str | None
    state_change: bool

    #: When it was created (or its id last rotated), ms since the epoch.
    created_at: int = 0

    _COLUMNS: ClassVar[str] = (
        "hook_id, name, user_id, room_id, signing_secret, state_change, created_at"
    )

    @classmethod
    def _from_row(cls, row: Row) -> Webhook:
        return cls(
            row["hook_id"],
            row["name"],
            row["user_id"],
            row["room_id"],
            row["signing_secret"],
            bool(row["state_change"]),
            int(row["created_at"]),
        )

    @classmethod
    async def get(cls, hook_id: str) -> Webhook | None:
        q = f"SELECT {cls._COLUMNS} FROM webhook WHERE hook_id=$1"
        row = await cls.read_db.fetchrow(q, hook_id)
        return None if row is None else cls._from_row(row)

    @classmethod
    async def get_by_name(cls, name: str) -> Webhook | None:
        q = f"SELECT {cls._COLUMNS} FROM webhook WHERE name=$1"
        row = await cls.read_db.fetchrow(q, name)
        return None if row is None else cls._from_row(row)

    @classmethod
    async def all(cls) -> list[Webhook]:
        q = f"SELECT {cls._COLUMNS} FROM webhook ORDER BY name"
        return [cls._from_row(row) for row in await cls.read_db.fetch(q)]

    async def last_delivery(self) -> int | None:
        """When it last posted (or was last tried), ms since the epoch; None if never."""
        q = "SELECT MAX(created_at) FROM webhook_delivery WHERE hook_id=$1"
        value = await self.read_db.fetchval(q, self.hook_id)
        return None if value is None else int(value)

    async def delete(self) -> None:
        """Remove the hook with its deliveries and states: its URL stops working at once."""
        async with transaction() as conn:
            for table in ("webhook_delivery", "webhook_state", "webhook"):
                await conn.execute(f"DELETE FROM {table} WHERE hook_id=$1", self.hook_id)

    async def rotate(self, hook_id: str, signing_secret: str | None) -> None:
        """A new id (its URL) and signing secret; the old ones stop working at once. The
        deliveries and states it knows move along, so nothing posts twice or alerts again."""
        async with transaction() as conn:
            q = "UPDATE webhook SET hook_id=$2, signing_secret=$3, created_at=$4 WHERE hook_id=$1"
            await conn.execute(q, self.hook_id, hook_id, signing_secret, now_ms())
            for table in ("webhook_delivery", "webhook_state"):
                q = f"UPDATE {table} SET hook_id=$2 WHERE hook_id=$1"
                await conn.execute(q, self.hook_id, hook_id)
        self.hook_id, self.signing_secret = hook_id, signing_secret

    async def insert(self) -> None:
        q = (
            "INSERT INTO webhook (hook_id, name, user_id, room_id, signing_secret, state_change,"
            " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        await self.db.execute(
            q,
            self.hook_id,
            self.name,
            self.user_id,
            self.room_id,
            self.signing_secret,
            self.state_change,
            self.created_at or now_ms(),
        )

    async def claim_delivery(self, delivery_id: str) -> bool:
        """Reserve a delivery id; False if it was posted (or is being posted) already."""
        q = (
            "INSERT INTO webhook_delivery (hook_id, delivery_id, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (hook_id, delivery_id) DO NOTHING"
        )
        return rows_changed(await self.db.execute(q, self.hook_id, delivery_id, now_ms())) > 0

    async def delivery_event(self, delivery_id: str) -> str | None:
        q = "SELECT event_id FROM webhook_delivery WHERE hook_id=$1 AND delivery_id=$2"
        return await text_value(self.read_db, q, self.hook_id, delivery_id)

    async def finish_delivery(self, delivery_id: str, event_id: str | None) -> None:
        if event_id is None:  # the post failed: let the sender retry this delivery
            q = "DELETE FROM webhook_delivery WHERE hook_id=$1 AND delivery_id=$2"
            await self.db.execute(q, self.hook_id, delivery_id)
        else:
            q = "UPDATE webhook_delivery SET event_id=$3 WHERE hook_id=$1 AND delivery_id=$2"
            await self.db.execute(q, self.hook_id, delivery_id, event_id)

    async def swap_state(self, key: str, state: str) -> bool:
        """Store the new state for key; True if it differs from the last one (or is the first).

        One statement: two deliveries of the same change at once (to two replicas, say)
        cannot both see the old state and both post."""
        q = (
            "INSERT INTO webhook_state (hook_id, state_key, state) VALUES ($1, $2, $3) "
            "ON CONFLICT (hook_id, state_key) DO UPDATE SET state=excluded.state "
            "WHERE webhook_state.state <> excluded.state RETURNING state"
        )
        return await self.db.fetchval(q, self.hook_id, key, state) is not None

    async def restore_state(self, key: str, state: str | None) -> None:
        """Put back the previous state after a failed post, so the change is posted on retry."""
        if state is None:
            q = "DELETE FROM webhook_state WHERE hook_id=$1 AND state_key=$2"
            await self.db.execute(q, self.hook_id, key)
        else:
            q = "UPDATE webhook_state SET state=$3 WHERE hook_id=$1 AND state_key=$2"
            await self.db.execute(q, self.hook_id, key, state)

    async def state(self, key: str) -> str | None:
        q = "SELECT state FROM webhook_state WHERE hook_id=$1 AND state_key=$2"
        return await text_value(self.read_db, q, self.hook_id, key)

    @classmethod
    async def prune_deliveries(cls, before_ms: int, batch: int) -> int:
        """Forget up to ``batch`` deliveries received before ``before_ms``; how many. A sender
        redelivering (or replaying) one after the retention window (``retention.py``) posts
        it again."""
        q = (
            "DELETE FROM webhook_delivery WHERE (hook_id, delivery_id) IN (SELECT hook_id, "
            "delivery_id FROM webhook_delivery WHERE created_at < $1 LIMIT $2)"
        )
        return rows_changed(await cls.db.execute(q, before_ms, batch))
