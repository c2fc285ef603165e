"""Operator routes for agents (``agent-chat-server agents list|retire|prune``), behind the
admin token like the other admin routes.

Retiring an agent makes it leave every room and revokes its tokens; its row stays, renamed
out of the way (kind ``retired``, looked up by user id only), so its old messages keep their
sender and ``ac register NAME`` gets exactly that name again, as a new Matrix user
(``@_ac_name.2``: Matrix user ids are never reused).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..db import Identity, Member, now_ms
from ..errors import ErrorAnswer
from .base import Context, check_admin, json_body, ok, public, routes, string_field

#: The longest idle time prune accepts: ten years, in seconds.
MAX_IDLE_SECONDS = 10 * 365 * 86400


async def _entry(context: Context, identity: Identity) -> dict[str, Any]:
    rooms = [
        await context.rooms.label(room_id, identity.user_id)
        for room_id in await Member.joined_rooms(identity.user_id)
    ]
    return {
        "nick": identity.nick,
        "user_id": identity.user_id,
        "kind": identity.kind,
        "created_at": identity.created_at,
        "last_active": identity.last_active,
        "rooms": sorted(rooms),
    }


async def _retire(context: Context, identity: Identity) -> dict[str, Any]:
    entry = await _entry(context, identity)
    left = await context.identities.retire(identity)
    # Tokens are cached for 30 s: a retired identity's must stop working at once.
    context._tokens.drop_where(lambda _, cached: cached.user_id == identity.user_id)
    entry["rooms_left"] = [await context.rooms.label(r, identity.user_id) for r in left]
    return entry


@routes.get("/admin/agents")
@public  # authorised by the admin token, not an identity token
async def list_agents(request: web.Request) -> web.Response:
    context = check_admin(request)
    return ok({"agents": [await _entry(context, i) for i in await Identity.active()]})


@routes.post("/admin/agents/retire")
@public
async def retire_agent(request: web.Request) -> web.Response:
    context = check_admin(request)
    data = await json_body(request)
    name = string_field(data, "name", max_len=255)
    if name.startswith("@"):
        identity = await Identity.get(name)
    else:
        identity = await Identity.get_by_nick(name)
    if identity is None or identity.kind == "retired":
        raise ErrorAnswer(404, "M_NOT_FOUND", f"no agent or bot called {name}")
    if identity.kind not in ("agent", "bot"):
        raise ErrorAnswer(
            400,
            "M_INVALID_PARAM",
            f"{name} is a {identity.kind}; only agents and bots are retired here",
        )
    return ok(await _retire(context, identity))


@routes.post("/admin/agents/prune")
@public
async def prune_agents(request: web.Request) -> web.Response:
    context = check_admin(request)
    data = await json_body(request)
    idle = data.get("idle_seconds")
    if not isinstance(idle, int) or isinstance(idle, bool) or not 1 <= idle <= MAX_IDLE_SECONDS:
        raise ErrorAnswer(
            400,
            "M_BAD_JSON",
            f"'idle_seconds' must be a whole number from 1 to {MAX_IDLE_SECONDS}",
        )
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'dry_run' must be true or false")
    idle_ones = await Identity.idle_agents(now_ms() - idle * 1000)
    if dry_run:
        agents = [await _entry(context, i) for i in idle_ones]
    else:
        agents = [await _retire(context, i) for i in idle_ones]
    return ok({"agents": agents, "dry_run": dry_run})
