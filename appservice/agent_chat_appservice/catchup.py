"""Catch up on room events Synapse never pushed.

Synapse persists a transaction only just before sending it; events still in its in-memory
queue when it stops (for instance because the supervisor stops it after the appservice
crashed) are never sent. At start-up the appservice therefore reads each room's recent
timeline back to the newest event it has stored and applies what is missing, through the same
validation and idempotent writes as pushed transactions.
"""

from __future__ import annotations

from typing import Any, Callable
import logging

from mautrix.api import Method, Path
from mautrix.util.async_db import Database

from . import ingest
from .homeserver import Homeserver

log = logging.getLogger("agent_chat.catchup")

PAGE = 100
MAX_PAGES = 10


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
            missed = await _missed_events(hs, row["room_id"], row["newest"], ours[0])
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


async def _missed_events(
    hs: Homeserver, room_id: str, newest: str, reader: str
) -> list[dict[str, Any]]:
    """Events after ``newest`` in the room's timeline, oldest first."""
    api = hs.client(reader).api
    newer: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        query = {"dir": "b", "limit": str(PAGE)}
        if token:
            query["from"] = token
        resp = await api.request(Method.GET, Path.v3.rooms[room_id].messages, query_params=query)
        chunk = resp.get("chunk") or []
        for event in chunk:
            if isinstance(event, dict) and event.get("event_id") == newest:
                return list(reversed(newer))
            newer.append(event)
        token = resp.get("end")
        if not chunk or not token:
            break
    return list(reversed(newer))
