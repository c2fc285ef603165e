"""Search: the homeserver's full-text search (``POST /_matrix/client/v3/search``), asked as
the caller, over the rooms the caller is in."""

from __future__ import annotations

from typing import Any
import logging

from aiohttp import web

from .. import metrics
from ..db import Member
from ..errors import HOMESERVER_ERRORS, ErrorAnswer, from_matrix
from ..messaging import resolve_target
from ..text import detect_prefix, is_urgent
from .base import Context, caller, ctx, ok, query_int, routes

log = logging.getLogger("agent_chat.api.search")

#: The longest query, in characters.
MAX_QUERY = 256
#: Pages of results asked of the homeserver at most per request (``since`` skips older ones).
MAX_PAGES = 10


def _since(request: web.Request) -> int | None:
    value = request.query.get("since")
    if value is None:
        return None
    try:
        since = int(value)
    except ValueError:
        raise ErrorAnswer(
            400, "M_INVALID_PARAM", "'since' is a time in milliseconds since 1970"
        ) from None
    if since < 0:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'since' is a time in milliseconds since 1970")
    return since


def _events(answer: Any) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """The events of one page of the homeserver's answer, its next_batch and its count."""
    section = answer.get("search_categories", {}).get("room_events", {})
    if not isinstance(section, dict):
        return [], None, None
    results = section.get("results")
    events = [
        r["result"]
        for r in (results if isinstance(results, list) else [])
        if isinstance(r, dict) and isinstance(r.get("result"), dict)
    ]
    next_batch = section.get("next_batch")
    count = section.get("count")
    return (
        events,
        next_batch if isinstance(next_batch, str) else None,
        count if isinstance(count, int) and not isinstance(count, bool) else None,
    )


async def _message(context: Context, me: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """A found event as ``/messages`` shows a message; None for anything else."""
    content = event.get("content")
    room_id, sender, ts = event.get("room_id"), event.get("sender"), event.get("origin_server_ts")
    if not isinstance(content, dict) or not isinstance(content.get("body"), str):
        return None
    if not isinstance(room_id, str) or not isinstance(sender, str) or not isinstance(ts, int):
        return None
    body = content["body"]
    room = await context.rooms.label(room_id, me)
    msgtype = content.get("msgtype")
    return {
        "event_id": event.get("event_id"),
        "room_id": room_id,
        "room": room,
        "sender": sender,
        "sender_name": await context.rooms.person_name(sender),
        "ts": ts,
        "body": body,
        "msgtype": msgtype if isinstance(msgtype, str) else "m.text",
        "prefix": detect_prefix(body),
        "urgent": is_urgent(body, room[1:] if room.startswith("#") else None),
    }


@routes.get("/search")
async def search(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    query = request.query.get("q", "")
    if not query.strip():
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'q' is empty: give words to search for")
    if len(query) > MAX_QUERY:
        raise ErrorAnswer(
            400, "M_INVALID_PARAM", f"'q' is {len(query)} characters; at most {MAX_QUERY}"
        )
    limit = query_int(request, "limit", 20, 1, 100)
    since = _since(request)
    room = request.query.get("room")
    if room is not None and not room:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'room' is empty: leave it out for every room")
    sender = request.query.get("from")
    if sender is not None and not sender:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'from' is empty: leave it out for anyone")
    # Only rooms the caller is in, whatever the homeserver would answer (it answers only
    # those anyway, since it is asked as the caller).
    joined = set(await Member.joined_rooms(me.user_id))
    if room:
        room_ids = [await resolve_target(context, me.user_id, room, join=False)]
        if room_ids[0] not in joined:
            raise ErrorAnswer(404, "M_NOT_FOUND", "you are not in that room")
    else:
        room_ids = sorted(joined)
    room_filter: dict[str, Any] = {"rooms": room_ids, "limit": min(limit, 50)}
    if sender:
        room_filter["senders"] = [await context.rooms.resolve_user(sender)]
    found: list[dict[str, Any]] = []
    count: int | None = 0
    next_batch: str | None = None
    if room_ids:
        body = {
            "search_categories": {
                "room_events": {
                    "search_term": query,
                    "keys": ["content.body"],
                    "order_by": "recent",
                    "filter": room_filter,
                }
            }
        }
        metrics.SEARCHES.inc()
        for page in range(MAX_PAGES):
            try:
                answer = await context.hs.search(me.user_id, body, next_batch)
            except HOMESERVER_ERRORS as e:
                raise from_matrix(e, "searching") from None
            events, next_batch, total = _events(answer)
            if page == 0:
                count = total
            older = False
            for event in events:
                if event.get("room_id") not in room_ids:
                    continue  # never another room's text, whatever the homeserver said
                ts = event.get("origin_server_ts")
                if since is not None and isinstance(ts, int) and ts < since:
                    older = True  # newest first: the rest are older still
                    continue
                message = await _message(context, me.user_id, event)
                if message is not None:
                    found.append(message)
            if older or next_batch is None or len(found) >= limit:
                break
    found = found[:limit]
    return ok({"results": found, "count": count})
