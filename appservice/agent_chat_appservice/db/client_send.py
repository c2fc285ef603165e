"""Client transaction ids of sends, so that a retried send never posts twice.

Two layers: Synapse deduplicates ``PUT /send/{txnId}`` for the same path (we derive the
Matrix txnId from user and client txn id) for at least 30 minutes, which covers concurrent
retries; this table makes the answer permanent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mautrix.util.async_db import Database

from .identity import now_ms


@dataclass
class ClientSend:
    db: ClassVar[Database]

    user_id: str
    txn_id: str
    room_id: str
    event_id: str

    @classmethod
    async def get(cls, user_id: str, txn_id: str) -> ClientSend | None:
        q = "SELECT room_id, event_id FROM client_send WHERE user_id=$1 AND txn_id=$2"
        row = await cls.db.fetchrow(q, user_id, txn_id)
        if row is None or row["event_id"] is None:
            return None
        return cls(user_id, txn_id, row["room_id"], row["event_id"])

    async def insert(self) -> None:
        q = (
            "INSERT INTO client_send (user_id, txn_id, room_id, event_id, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, txn_id) DO NOTHING"
        )
        await self.db.execute(q, self.user_id, self.txn_id, self.room_id, self.event_id, now_ms())
