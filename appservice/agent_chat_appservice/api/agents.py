"""Identities: register, whoami; plus the public health check and the OpenAPI document."""

from __future__ import annotations

from importlib import resources
import hmac
import logging

from aiohttp import web
from mautrix.errors import MatrixRequestError

from .. import __version__, metrics
from ..db import Identity
from ..errors import HOMESERVER_ERRORS, ErrorAnswer, from_matrix
from ..limits import enforce
from .base import caller, ctx, json_body, ok, public, routes, string_field
from .invite_tokens import check_invite

log = logging.getLogger("agent_chat.api.agents")


@routes.get("/health")
@public
async def health(request: web.Request) -> web.Response:
    context = ctx(request)
    homeserver = await context.hs.versions_ok()
    if not context.ready or not homeserver:
        what = "starting up" if homeserver else "cannot reach the homeserver"
        raise ErrorAnswer(503, "AC_UNAVAILABLE", f"the appservice is {what}")
    return ok(
        {
            "status": "ok",
            "server_name": context.config.server_name,
            "homeserver": homeserver,
            "version": __version__,
            "ledger_writer": context.is_writer(),
        }
    )


@routes.get("/openapi.yaml")
@public
async def openapi(_: web.Request) -> web.Response:
    text = resources.files("agent_chat_appservice").joinpath("api", "openapi.yaml").read_text()
    return web.Response(text=text, content_type="application/yaml")


@routes.post("/register")
@public
async def register(request: web.Request) -> web.Response:
    context = ctx(request)
    data = await json_body(request)
    address = context.limits.client(request)
    await enforce(
        context.limits.registrations, "register:" + address, "registrations from your address"
    )
    if not context.config.open_registration:
        given = data.get("registration_token")
        if not isinstance(given, str) or not (
            hmac.compare_digest(given.encode(), context.config.registration_token.encode())
            or await check_invite(given)
        ):
            raise ErrorAnswer(
                403,
                "M_FORBIDDEN",
                "wrong or missing registration_token; ask the server's operator for it",
            )
    nick = data.get("nick")
    if nick is not None and not isinstance(nick, str):
        raise ErrorAnswer(400, "M_BAD_JSON", "'nick' must be a string")
    exact = data.get("exact", False)
    if not isinstance(exact, bool):
        raise ErrorAnswer(400, "M_BAD_JSON", "'exact' must be true or false")
    identity, token = await context.identities.register(nick or None, exact)
    return ok(
        {
            "user_id": identity.user_id,
            "nick": identity.nick,
            "kind": identity.kind,
            "token": token,
            "rooms": ["#" + r["alias"] for r in context.config.rooms],
        },
        status=201,
    )


@routes.get("/whoami")
async def whoami(request: web.Request) -> web.Response:
    me = caller(request)
    return ok({"user_id": me.user_id, "nick": me.nick, "kind": me.kind})


@routes.post("/login")
@public
async def login(request: web.Request) -> web.Response:
    """A human logs in with their Matrix account and gets an API token for `ac`."""
    context = ctx(request)
    data = await json_body(request)
    user = string_field(data, "user", max_len=255)
    password = string_field(data, "password", max_len=1024, text=True)
    localpart = user[1:].split(":", 1)[0] if user.startswith("@") else user
    if context.identities.is_ours(f"@{localpart}:{context.config.server_name}"):
        raise ErrorAnswer(403, "M_FORBIDDEN", "agents and bots do not log in; they register")
    # Our own limits (limits.py): Synapse sees every login through us from one address.
    limits = context.limits
    address = limits.client(request)
    await enforce(limits.login_addresses, "login-from:" + address, "logins from your address")
    account = "login:" + localpart.lower()
    await enforce(limits.login_accounts, account, "failed logins for this account")
    try:
        user_id, matrix_token = await context.hs.password_login(user, password)
    except MatrixRequestError as e:
        if e.http_status in (401, 403):  # a wrong guess: it keeps its token
            raise ErrorAnswer(401, "M_FORBIDDEN", "wrong user name or password") from None
        await limits.login_accounts.refund(account)
        raise from_matrix(e, "logging in") from None
    except HOMESERVER_ERRORS as e:
        await limits.login_accounts.refund(account)
        raise from_matrix(e, "logging in") from None
    await limits.login_accounts.refund(account)  # only failures count against an account
    first_login = await Identity.get(user_id) is None
    identity = await Identity.upsert_human(user_id, localpart, matrix_token)
    context.hs.user_tokens[user_id] = matrix_token
    token = await identity.issue_token()
    metrics.REGISTRATIONS.inc("human")
    # A human's first `ac login` joins the default rooms, as an agent's registration does;
    # later logins leave their rooms alone (they may have left some on purpose).
    rooms = []
    if first_login:
        for room_id, room in zip(
            context.rooms.default_room_ids, context.config.rooms, strict=False
        ):
            try:
                await context.rooms.join(user_id, room_id)
            except ErrorAnswer as e:
                log.warning("%s could not join #%s at login: %s", user_id, room["alias"], e)
                continue
            rooms.append("#" + room["alias"])
    return ok(
        {
            "user_id": user_id,
            "nick": identity.nick,
            "kind": "human",
            "token": token,
            "rooms": rooms,
        },
        status=201,
    )
