"""Homeserver transactions already applied to the ledger."""

from __future__ import annotations

from typing import ClassVar

from mautrix.util.async_db import Connection, Database

from .identity import now_ms


class HSTransaction:
    db: ClassVar[Database]

    @classmethod
    async def claim(cls, conn: Connection, txn_id: str, digest: str) -> bool:
        """Record the transaction inside the caller's DB transaction.

        False when this exact transaction (same id, same contents) was applied before. Synapse
        restarts its txnId counter in some cases (seen after an unclean stop), so an old id
        with new contents is applied; every write it makes is idempotent by event id anyway.
        """
        # Write first: on SQLite that takes the write lock at once, so this transaction never
        # has to upgrade a read snapshot (which can fail with SQLITE_BUSY under concurrency).
        await conn.execute(
            "UPDATE hs_transaction SET received_at=$2 WHERE txn_id=$1", txn_id, now_ms()
        )
        q = "SELECT digest FROM hs_transaction WHERE txn_id=$1"
        previous = await conn.fetchval(q, txn_id)
        if previous == digest:
            return False
        q = (
            "INSERT INTO hs_transaction (txn_id, digest, received_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (txn_id) DO UPDATE SET digest=excluded.digest, "
            "received_at=excluded.received_at"
        )
        await conn.execute(q, txn_id, digest, now_ms())
        return True
