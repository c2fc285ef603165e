"""How long the deduplication tables keep a row, and the background task that prunes them.

Each table exists to recognise a repeat; a row is kept as long as a repeat can still come:

=================  ========  ==============================================================
table              kept      why that long
=================  ========  ==============================================================
hs_transaction     7 days    Synapse retries the oldest unanswered transaction until it gets
                             200 and never resends one it got 200 for; the row is written
                             when the transaction is applied, i.e. answered. A week covers
                             a stray duplicate from a Synapse restored from a backup.
client_send        7 days    a client retries a send within seconds (``ac`` once, at once;
                             Synapse's own txnId cache lasts 30 minutes). A week covers a
                             laptop that slept through a retry.
webhook_delivery   30 days   GitHub lets a person redeliver a delivery for 3 days (other
                             senders: hours); for a signed hook the row is also what refuses
                             a replay of captured bytes, so it is kept longest.
=================  ========  ==============================================================

A repeat older than its window is treated as new. Pruning runs on the ledger writer a minute
after start and then hourly (and on ``POST /admin/prune``), in batches, so a large backlog
never holds the database's write lock for long.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import asyncio
import logging

from . import metrics
from .db import ClientSend, HSTransaction, Webhook, now_ms

log = logging.getLogger("agent_chat.retention")

DAY_MS = 24 * 3600 * 1000
HS_TRANSACTION_DAYS = 7
CLIENT_SEND_DAYS = 7
WEBHOOK_DELIVERY_DAYS = 30
#: Rows deleted per statement; batches follow each other until a table is within its window.
BATCH = 1000
INTERVAL_SECONDS = 3600.0
#: The first round, after start: a process restarted more often than hourly still prunes.
FIRST_SECONDS = 60.0


@dataclass
class Pruned:
    hs_transaction: int = 0
    client_send: int = 0
    webhook_delivery: int = 0


async def _drain(prune: Callable[[int, int], Awaitable[int]], before_ms: int) -> int:
    total = 0
    while True:
        count = await prune(before_ms, BATCH)
        total += count
        if count < BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


async def prune_once(now: int | None = None) -> Pruned:
    """Delete every row older than its table's window; how many per table."""
    now = now_ms() if now is None else now
    pruned = Pruned(
        hs_transaction=await _drain(HSTransaction.prune, now - HS_TRANSACTION_DAYS * DAY_MS),
        client_send=await _drain(ClientSend.prune, now - CLIENT_SEND_DAYS * DAY_MS),
        webhook_delivery=await _drain(
            Webhook.prune_deliveries, now - WEBHOOK_DELIVERY_DAYS * DAY_MS
        ),
    )
    for table, count in vars(pruned).items():
        if count:
            metrics.PRUNED.inc(table, count)
    if any(vars(pruned).values()):
        log.info("pruned rows past their retention window: %s", vars(pruned))
    return pruned


async def prune_forever(interval: float = INTERVAL_SECONDS, first: float = FIRST_SECONDS) -> None:
    """The background loop: prune ``first`` seconds after start, then every ``interval``
    seconds; a failure is logged and the next round tries again."""
    await asyncio.sleep(first)
    while True:
        try:
            await prune_once()
        except Exception:
            log.exception("pruning failed; trying again in %.0f s", interval)
        await asyncio.sleep(interval)
