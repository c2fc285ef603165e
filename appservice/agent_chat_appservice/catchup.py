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

from . import ingest
from .db import Member, Message, transaction
from .homeserver import Homeserver
from .invites import InvitePolicy
from .waiters import Waiters

log = logging.getLogger("agent_chat.catchup")

PAGE = 100
DEPTH = 300


async def catch_up(
    hs: Homeserver,
    server_name: str,
    is_ours: Callable[[str], bool],
    waiters: Waiters | None = None,
) -> int:
    """Apply missed events in every room we hold messages of; returns how many were new.

    A room without stored messages has nothing to anchor on: history before us is not news.
    """
    applied = 0
    invites = InvitePolicy(hs.config.auto_join, server_name, is_ours)
    for room_id in await Message.rooms_with_messages():
        ours = [u for u in await Member.joined_user_ids(room_id) if is_ours(u)]
        if not ours:
            continue  # nobody of ours can read the room
        try:
            missed = await _recent_events(hs, room_id, ours[0])
        except Exception as e:
            log.warning("catch-up of %s failed: %s", room_id, e)
            continue
        records = [r for r in (ingest.parse_event(e, server_name) for e in missed) if r]
        if not records:
            continue
        async with transaction() as conn:
            effects = await ingest.apply(conn, records, is_ours, invites.accepts)
        if waiters is not None:
            await waiters.wake_changed(effects.rooms, effects.users)
        if effects.messages_counted:
            log.info("caught up %d missed message(s) in %s", effects.messages_counted, room_id)
            applied += effects.messages_counted
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
