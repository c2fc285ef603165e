"""Catch up on room events Synapse never pushed.

Synapse persists a transaction only just before sending it; events still in its in-memory
queue when it stops (a restart, or the supervisor stopping it after the appservice crashed)
are never sent. So at start-up, and whenever Synapse comes back after being unreachable, the
appservice reads each room's recent timeline and applies what it has not stored, in order,
through the same validation and idempotent writes as pushed transactions. The lost events
sit just before the restart, while later ones may already have arrived: the scan does not
stop at the first known event but covers the last ``DEPTH`` events of each room.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
import logging

from mautrix.api import Method, Path
from mautrix.util.async_db import Database

from . import ingest
from .homeserver import Homeserver

log = logging.getLogger("agent_chat.catchup")

PAGE = 100
DEPTH = 300


async def catch_up(
    db: Database, hs: Homeserver, server_name: str, is_ours: Callable[[str], bool]
) -> int:
    """Apply missed events in every room we hold messages of; returns how many were new."""
    q = (
        "SELECT r.room_id, (SELECT m.event_id FROM message m WHERE m.room_id=r.room_id"
        " ORDER BY m.seq DESC LIMIT 1) AS newest FROM room r"
    )
    applied = 0
    for row in await db.fetch(q):
        if row["newest"] is None:
            continue  # nothing to anchor on: history before us is not news
        q = "SELECT user_id FROM member WHERE room_id=$1 AND membership='join' ORDER BY user_id"
        ours = [r["user_id"] for r in await db.fetch(q, row["room_id"]) if is_ours(r["user_id"])]
        if not ours:
            continue  # nobody of ours can read the room
        try:
            missed = await _recent_events(hs, row["room_id"], ours[0])
        except Exception as e:
            log.warning("catch-up of %s failed: %s", row["room_id"], e)
            continue
        records = [r for r in (ingest.parse_event(e, server_name) for e in missed) if r]
        if not records:
            continue
        before = await db.fetchval("SELECT COUNT(*) FROM message WHERE room_id=$1", row["room_id"])
        async with db.acquire() as conn, conn.transaction():
            await ingest.apply(conn, records, is_ours)
        after = await db.fetchval("SELECT COUNT(*) FROM message WHERE room_id=$1", row["room_id"])
        if after > before:
            log.info("caught up %d missed message(s) in %s", after - before, row["room_id"])
            applied += after - before
    return applied


async def _recent_events(hs: Homeserver, room_id: str, reader: str) -> list[dict[str, Any]]:
    """The room's last ``DEPTH`` timeline events, oldest first."""
    api = hs.client(reader).api
    events: list[dict[str, Any]] = []
    token: str | None = None
    while len(events) < DEPTH:
        query = {"dir": "b", "limit": str(PAGE)}
        if token:
            query["from"] = token
        resp = await api.request(Method.GET, Path.v3.rooms[room_id].messages, query_params=query)
        chunk = [e for e in resp.get("chunk") or [] if isinstance(e, dict)]
        events.extend(chunk)
        token = resp.get("end")
        if not chunk or not token:
            break
    return list(reversed(events))
