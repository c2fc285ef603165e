"""Operator routes (``agent-chat-server bot add``, ``webhook add|list|remove|rotate``, pruning
now), behind the admin token derived from the as_token (see ``Config.admin_token``).

Webhooks are named by their name here, never by their id: the id is the secret in the hook's
URL, shown only by ``add`` and ``rotate``.
"""

from __future__ import annotations

from typing import Any
import secrets

from aiohttp import web

from agent_chat.wire import API_PREFIX

from ..db import Identity, Webhook
from ..errors import ErrorAnswer
from ..retention import prune_once
from .base import Context, check_admin, json_body, ok, public, routes, string_field


@routes.post("/admin/bots")
@public  # authorised by the admin token, not an identity token
async def add_bot(request: web.Request) -> web.Response:
    context = check_admin(request)
    data = await json_body(request)
    nick = string_field(data, "nick", max_len=32)
    identity, token = await context.identities.register(nick, exact=True, kind="bot")
    return ok(
        {"user_id": identity.user_id, "nick": identity.nick, "kind": "bot", "token": token},
        status=201,
    )


@routes.post("/admin/webhooks")
@public
async def add_webhook(request: web.Request) -> web.Response:
    context = check_admin(request)
    data = await json_body(request)
    name = string_field(data, "name", max_len=32)
    room = string_field(data, "room", max_len=255)
    sign, state_change = data.get("sign", False), data.get("state_change", False)
    if not isinstance(sign, bool) or not isinstance(state_change, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'sign' and 'state_change' must be true or false")
    if not room.startswith(("#", "!")):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "name the room as #room")
    # Each webhook posts as its own bot, so Element shows who is talking.
    identity, _ = await context.identities.register(name, exact=True, kind="bot")
    room_id = await context.rooms.resolve_room(identity.user_id, room, join=True)
    hook = Webhook(
        hook_id=secrets.token_urlsafe(32),
        name=identity.nick,
        user_id=identity.user_id,
        room_id=room_id,
        signing_secret=secrets.token_hex(32) if sign else None,
        state_change=state_change,
    )
    await hook.insert()
    return ok(await _secrets(context, hook), status=201)


async def _secrets(context: Context, hook: Webhook) -> dict[str, Any]:
    """What ``add`` and ``rotate`` show once: the URL's path and the signing secret."""
    return {
        "name": hook.name,
        "hook_id": hook.hook_id,
        "path": f"{API_PREFIX}/hooks/{hook.hook_id}",
        "room": await context.rooms.label(hook.room_id, hook.user_id),
        "signing_secret": hook.signing_secret,
        "state_change": hook.state_change,
    }


async def _named_hook(request: web.Request) -> tuple[Context, Webhook]:
    context = check_admin(request)
    data = await json_body(request)
    name = string_field(data, "name", max_len=32)
    hook = await Webhook.get_by_name(name)
    if hook is None:
        raise ErrorAnswer(
            404, "M_NOT_FOUND", f"no webhook called {name}; see agent-chat-server webhook list"
        )
    return context, hook


@routes.get("/admin/webhooks")
@public
async def list_webhooks(request: web.Request) -> web.Response:
    context = check_admin(request)
    hooks = []
    for hook in await Webhook.all():
        hooks.append(
            {
                "name": hook.name,
                "user_id": hook.user_id,
                "room": await context.rooms.label(hook.room_id, hook.user_id),
                "signed": hook.signing_secret is not None,
                "state_change": hook.state_change,
                "created_at": hook.created_at,
                "last_delivery": await hook.last_delivery(),
            }
        )
    return ok({"webhooks": hooks})


@routes.post("/admin/webhooks/remove")
@public
async def remove_webhook(request: web.Request) -> web.Response:
    """The URL stops working at once; the hook's bot leaves its rooms and its name is free."""
    context, hook = await _named_hook(request)
    await hook.delete()
    identity = await Identity.get(hook.user_id)
    if identity is not None and identity.kind == "bot":
        await context.identities.retire(identity)
    return ok({"name": hook.name, "removed": True})


@routes.post("/admin/webhooks/rotate")
@public
async def rotate_webhook(request: web.Request) -> web.Response:
    """A new URL (and signing secret, for a signed hook); the old ones stop working at once."""
    context, hook = await _named_hook(request)
    await hook.rotate(
        secrets.token_urlsafe(32), secrets.token_hex(32) if hook.signing_secret else None
    )
    return ok(await _secrets(context, hook))


@routes.post("/admin/prune")
@public
async def prune_now(request: web.Request) -> web.Response:
    """Prune the deduplication tables now, as the hourly task does (``retention.py``)."""
    check_admin(request)
    return ok({"pruned": vars(await prune_once())})
