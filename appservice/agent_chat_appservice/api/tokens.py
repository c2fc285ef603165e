"""Ending API tokens: ``ac logout`` (the caller's own) and ``agent-chat-server user revoke``
(every token of a human, by the operator). The policy lives in ``sessions.py``."""

from __future__ import annotations

from aiohttp import web

from .. import sessions
from ..db import Identity
from ..errors import ErrorAnswer
from .base import caller, check_admin, ctx, json_body, ok, public, routes, string_field


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """Revoke the token of this request (a human's last one also ends the Matrix session
    that ``ac login`` opened)."""
    context, me = ctx(request), caller(request)
    header = request.headers.get("Authorization", "")
    await sessions.log_out(context, header[7:].strip(), me)
    return ok({"user_id": me.user_id, "logged_out": True})


@routes.post("/admin/users/revoke")
@public  # authorised by the admin token, not an identity token
async def revoke_user(request: web.Request) -> web.Response:
    """Every API token of a human dies, and the Matrix session ``ac login`` opened for them
    ends (their other Matrix sessions, Element's, are the homeserver's to end)."""
    context = check_admin(request)
    data = await json_body(request)
    name = string_field(data, "name", max_len=255)
    user_id = name if name.startswith("@") else f"@{name}:{context.config.server_name}"
    identity = await Identity.get(user_id)
    if identity is None or identity.kind != "human":
        raise ErrorAnswer(
            404,
            "M_NOT_FOUND",
            f"{user_id} has never logged in with ac: there is nothing to revoke",
        )
    await sessions.revoke(context, user_id, matrix_logout=True)
    return ok({"user_id": user_id, "revoked": True}, status=201)
