"""Homeserver transactions already applied to the ledger."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .base import Table, now_ms, rows_changed


class HSTransaction(Table):
    @classmethod
    async def claim(cls, conn: Connection, txn_id: str, digest: str) -> bool:
        """Record the transaction inside the caller's DB transaction.

        False when this exact transaction (same id, same contents) was applied before. Synapse
        restarts its txnId counter in some cases (seen after an unclean stop), so an old id
        with new contents is applied; every write it makes is idempotent by event id anyway.
        """
        # One statement, and a write: on SQLite it takes the write lock at once, so this
        # transaction never has to upgrade a read snapshot. A row comes back when the
        # transaction is new or its contents differ; none when it is an exact repeat.
        q = (
            "INSERT INTO hs_transaction (txn_id, digest, received_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (txn_id) DO UPDATE SET digest=excluded.digest, "
            "received_at=excluded.received_at WHERE hs_transaction.digest<>excluded.digest "
            "RETURNING txn_id"
        )
        return await conn.fetchval(q, txn_id, digest, now_ms()) is not None

    @classmethod
    async def prune(cls, before_ms: int, batch: int) -> int:
        """Forget up to ``batch`` transactions received before ``before_ms``; how many.

        Synapse retries a transaction until it is answered 200 and never sends it again
        afterwards, so only a transaction answered long ago is forgotten (``retention.py``):
        one still being retried is either recent or was never recorded (it failed)."""
        q = (
            "DELETE FROM hs_transaction WHERE txn_id IN (SELECT txn_id FROM hs_transaction "
            "WHERE received_at < $1 LIMIT $2)"
        )
        return rows_changed(await cls.db.execute(q, before_ms, batch))
