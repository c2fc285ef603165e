"""Indexes by age on the tables pruned after their retention window (``retention.py``), so that
the hourly prune reads only the rows it deletes."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from .table import register


@register("Indexes by age for pruning webhook_delivery, client_send, hs_transaction")
async def upgrade_v10(conn: Connection) -> None:
    await conn.execute("CREATE INDEX webhook_delivery_created_at ON webhook_delivery (created_at)")
    await conn.execute("CREATE INDEX client_send_created_at ON client_send (created_at)")
    await conn.execute("CREATE INDEX hs_transaction_received_at ON hs_transaction (received_at)")
