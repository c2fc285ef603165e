"""Client transaction ids of sends, so that a retried send never posts twice.

Three layers: Synapse deduplicates ``PUT /send/{txnId}`` in memory for at least 30 minutes
(we derive the Matrix txnId from user and client txn id), which covers concurrent retries;
this table makes a completed answer permanent; and a send that started but never completed
(``event_id`` still NULL, e.g. Synapse restarted mid-request and forgot its cache) is looked
for in the room's timeline by its txn marker before it is sent again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Table, now_ms, rows_changed


@dataclass
class ClientSend(Table):
    user_id: str
    txn_id: str
    room_id: str
    event_id: str | None  # None: started, outcome unknown

    @classmethod
    async def get(cls, user_id: str, txn_id: str) -> ClientSend | None:
        q = "SELECT room_id, event_id FROM client_send WHERE user_id=$1 AND txn_id=$2"
        row = await cls.read_db.fetchrow(q, user_id, txn_id)
        if row is None:
            return None
        return cls(user_id, txn_id, row["room_id"], row["event_id"])

    async def reserve(self) -> ClientSend | None:
        """Note that a send is starting (before the homeserver is asked).

        None when this txn id is new; otherwise the earlier attempt (a retry).
        """
        q = (
            "INSERT INTO client_send (user_id, txn_id, room_id, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, txn_id) DO NOTHING RETURNING txn_id"
        )
        if await self.db.fetchval(q, self.user_id, self.txn_id, self.room_id, now_ms()):
            return None
        return await self.get(self.user_id, self.txn_id)

    async def complete(self, event_id: str) -> None:
        self.event_id = event_id
        q = "UPDATE client_send SET event_id=$3 WHERE user_id=$1 AND txn_id=$2"
        await self.db.execute(q, self.user_id, self.txn_id, event_id)

    @classmethod
    async def prune(cls, before_ms: int, batch: int) -> int:
        """Forget up to ``batch`` sends started before ``before_ms``; how many. A client retries
        a send within seconds (``ac`` once, at once); a retry after the retention window
        (``retention.py``) would post again."""
        q = (
            "DELETE FROM client_send WHERE (user_id, txn_id) IN (SELECT user_id, txn_id "
            "FROM client_send WHERE created_at < $1 LIMIT $2)"
        )
        return rows_changed(await cls.db.execute(q, before_ms, batch))
