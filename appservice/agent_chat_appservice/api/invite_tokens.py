"""Operator routes for invite tokens (``agent-chat-server invite``), behind the admin token;
and the check ``POST /register`` makes of a token that is not the server's own."""

from __future__ import annotations

import time

from aiohttp import web

from ..db import now_ms
from ..db.invite_token import PREFIX, InviteToken
from ..errors import ErrorAnswer
from .base import check_admin, json_body, ok, public, routes

#: The longest an invite may live: a year, in seconds.
MAX_SECONDS = 365 * 86400
#: What an invited machine is told to do when its token no longer works.
ASK_AGAIN = "ask the server's operator for a new invite (agent-chat-server invite)"


async def check_invite(given: str) -> bool:
    """True when ``given`` is a valid invite token (its use counted); False when it is no
    invite token at all.

    Raises:
        ErrorAnswer: 403 ``AC_INVITE_EXPIRED`` or ``AC_INVITE_REVOKED``, saying what to do.
    """
    if not given.startswith(PREFIX):
        return False
    invite = await InviteToken.find(given)
    if invite is None:
        return False
    state = invite.state(now_ms())
    if state == "revoked":
        raise ErrorAnswer(403, "AC_INVITE_REVOKED", f"this invite token was revoked; {ASK_AGAIN}")
    if state == "expired":
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite.expires_at / 1000))
        raise ErrorAnswer(
            403, "AC_INVITE_EXPIRED", f"this invite token expired at {when}; {ASK_AGAIN}"
        )
    await InviteToken.used(invite.id)
    return True


@routes.get("/admin/invites")
@public  # authorised by the admin token, not an identity token
async def list_invites(request: web.Request) -> web.Response:
    check_admin(request)
    now = now_ms()
    return ok({"invites": [i.as_dict(now) for i in await InviteToken.all()]})


@routes.post("/admin/invites")
@public
async def create_invite(request: web.Request) -> web.Response:
    check_admin(request)
    data = await json_body(request)
    seconds = data.get("expires_seconds")
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not 1 <= seconds <= MAX_SECONDS
    ):
        raise ErrorAnswer(
            400, "M_BAD_JSON", f"'expires_seconds' must be a whole number from 1 to {MAX_SECONDS}"
        )
    note = data.get("note", "")
    if not isinstance(note, str) or len(note) > 200 or any(c < " " for c in note):
        raise ErrorAnswer(400, "M_BAD_JSON", "'note' must be one line of at most 200 characters")
    invite, token = await InviteToken.create(seconds, note)
    return ok({**invite.as_dict(now_ms()), "token": token})


@routes.post("/admin/invites/revoke")
@public
async def revoke_invite(request: web.Request) -> web.Response:
    check_admin(request)
    data = await json_body(request)
    invite_id = data.get("id")
    if not isinstance(invite_id, str) or not invite_id:
        raise ErrorAnswer(
            400, "M_BAD_JSON", "'id' must be an invite's id (agent-chat-server invite --list)"
        )
    invite = await InviteToken.revoke(invite_id)
    if invite is None:
        raise ErrorAnswer(404, "M_NOT_FOUND", f"no invite with id {invite_id}")
    return ok(invite.as_dict(now_ms()))
