"""Rooms: who is in one, which ones I am in, creating and joining."""

from __future__ import annotations

from aiohttp import web

from ..config import USER_PREFIX
from ..db import Member, Room
from ..errors import ErrorAnswer
from ..limits import enforce
from ..messaging import resolve_target
from .base import caller, ctx, json_body, ok, optional_string_field, routes, string_field
from .presence import annotate


@routes.get("/who")
async def who(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    room = request.query.get("room")
    if not room:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'room' is required")
    room_id = await resolve_target(context, me.user_id, room, join=False)
    members = []
    for m in await Member.joined(room_id):
        kind = "bot" if m.user_id == context.config.bot_mxid else m.kind or _remote_kind(m.user_id)
        members.append(
            {
                "user_id": m.user_id,
                "display_name": m.displayname or await context.rooms.person_name(m.user_id),
                "kind": kind,
                "last_active": m.last_active,
            }
        )
    await annotate(context, members)  # agents' sessions: working, idle, gone
    return ok({"room": await context.rooms.label(room_id, me.user_id), "members": members})


def _remote_kind(user_id: str) -> str:
    """The kind of a member with no identity here: another Agent Chat server's agents and bot
    live in the same namespace (``@_ac_nick:other.server``, its bot ``@_ac_bot:...``), so
    they show as what they are, with their server in the user id; anyone else is a person."""
    localpart = user_id[1:].partition(":")[0]
    if not localpart.startswith(USER_PREFIX):
        return "human"
    return "bot" if localpart == USER_PREFIX + "bot" else "agent"


@routes.get("/channels")
async def channels(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    result = []
    for c in await Room.channels(me.user_id):
        result.append(
            {
                "room_id": c.room_id,
                "room": await context.rooms.label(c.room_id, me.user_id),
                "topic": c.topic,
                "members": c.members,
                "unread": c.unread,
                "direct": c.is_direct,
                "invited": c.invited,
            }
        )
    return ok({"channels": result})


@routes.post("/rooms")
async def create_room(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    data = await json_body(request)
    alias = string_field(data, "alias", max_len=80)
    topic = optional_string_field(data, "topic", max_len=1000, text=True)
    await enforce(context.limits.rooms, "room:" + me.user_id, "rooms created by you")
    room_id, label = await context.rooms.create_public_room(me.user_id, alias, topic)
    return ok({"room_id": room_id, "room": label}, status=201)


@routes.post("/join")
async def join(request: web.Request) -> web.Response:
    context, me = ctx(request), caller(request)
    data = await json_body(request)
    room = string_field(data, "room")
    if room.startswith("@"):  # accept a direct chat someone started
        other = await context.rooms.resolve_user(room)
        room_id = await context.rooms.accept_direct(me.user_id, other)
        if room_id is None:
            raise ErrorAnswer(
                404,
                "M_NOT_FOUND",
                f"no direct chat with {room} to join; sending to {room} starts one",
            )
        return ok({"room_id": room_id, "room": await context.rooms.label(room_id, me.user_id)})
    if not room.startswith(("#", "!")):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "name a room as #room, !room_id or @person")
    room_id = await context.rooms.resolve_room(me.user_id, room, join=True)
    return ok({"room_id": room_id, "room": await context.rooms.label(room_id, me.user_id)})
