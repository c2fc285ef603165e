"""Presence of agent sessions: the signs of life ``/notify`` carries (``session=`` from hooks,
``waiter=`` from ``ac wait --session``), ``POST /sessions/end``, and ``GET /presence``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..db import AgentSession, Identity
from ..errors import ErrorAnswer
from ..presence import CLI_RE, GONE, SESSION_RE, SessionView, summary
from .base import Context, caller, ctx, json_body, ok, query_bool, routes


def session_of(data: dict[str, Any]) -> tuple[str, str | None]:
    """The report's ``session`` and ``cli``, checked: 400 for anything a terminal or a log
    should not carry."""
    session = data.get("session")
    if not isinstance(session, str) or not SESSION_RE.match(session):
        raise ErrorAnswer(
            400, "M_INVALID_PARAM", "'session' is 1-128 printable ASCII characters, no spaces"
        )
    cli = data.get("cli")
    if cli is not None and (not isinstance(cli, str) or not CLI_RE.match(cli)):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'cli' is 1-32 letters, digits, '.', '_' or '-'")
    return session, cli


def _checked(request: web.Request, key: str, header: str | None = None) -> str | None:
    value = request.query.get(key)
    if value is None and header is not None:
        value = request.headers.get(header)
    if value is not None and not SESSION_RE.match(value):
        raise ErrorAnswer(
            400, "M_INVALID_PARAM", f"'{key}' is 1-128 printable ASCII characters, no spaces"
        )
    return value


async def session_signs(
    context: Context, user_id: str, request: web.Request, holding: bool
) -> Callable[[], None]:
    """Record the sign of life a ``/notify`` request carries: ``session=SID`` (a hook call)
    or ``waiter=SID`` (a wake waiter, connected while ``holding`` the long-poll; also as the
    ``Agent-Chat-Waiter`` header, with ``Agent-Chat-Cli``); with ``cli``, ``host`` and
    ``repo``. Returns what to call when the request ends."""
    session = _checked(request, "session")
    waiter = _checked(request, "waiter", "Agent-Chat-Waiter")
    cli = request.query.get("cli") or request.headers.get("Agent-Chat-Cli")
    if cli is not None and not CLI_RE.match(cli):
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'cli' is 1-32 letters, digits, '.', '_' or '-'")
    query_bool(request, "covers", False)  # the hooks' other parameter: refused alike
    host, repo = request.query.get("host"), request.query.get("repo")
    if len(host or "") > 256 or len(repo or "") > 256:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'host' and 'repo' are at most 256 characters")
    sid = session or waiter
    if sid is None:
        return lambda: None
    presence = context.presence
    await presence.heard(user_id, sid, cli, host, repo, hook=session is not None)
    if waiter is None or not holding:
        return lambda: None
    was_wakeable = presence.wakeable(user_id, waiter)
    await presence.waiter_connected(user_id, waiter)
    if not was_wakeable:
        await presence.changed(user_id)

    def done() -> None:
        presence.waiter_left(user_id, waiter)

    return done


def presence_json(views: list[SessionView]) -> dict[str, Any]:
    """An identity's presence: the liveliest session's state (None: no session seen in a
    day), and every session of the last day."""
    return {
        "state": views[0].state if views else None,
        "status": summary(views),
        "sessions": [v.json() for v in views],
    }


async def annotate(context: Context, members: list[dict[str, Any]]) -> None:
    """``presence`` on each agent or bot of a member list (``/who``)."""
    user_ids = [str(m["user_id"]) for m in members if m.get("kind") in ("agent", "bot")]
    found = await context.presence.of_users(user_ids)
    for m in members:
        if m["user_id"] in found:
            m["presence"] = presence_json(found[m["user_id"]])


async def dm_presence(
    context: Context, sender: str, room_id: str, target: str
) -> dict[str, Any] | None:
    """The truth at send time: for a direct message to an agent (``target``: ``@Nick``),
    whether a session of it is running (its state and since when), so the sender knows when
    it will see the message. None for rooms, people and bots. The recipient comes from the
    target, not the room's members: a new direct chat's invitation may not be applied yet."""
    del room_id  # a message to @someone goes to their direct chat
    try:
        other = await context.rooms.resolve_user(target)
    except ErrorAnswer:
        return None
    if other == sender:
        return None
    identity = await Identity.get(other)
    if identity is None or identity.kind != "agent":
        return None
    views = (await context.presence.of_users([other]))[other]
    best = views[0] if views else None
    return {
        "user_id": other,
        "name": identity.nick,
        "state": best.state if best else GONE,
        "since": best.since_ms if best else None,
        "cli": best.session.cli if best else None,
    }


@routes.post("/sessions/end")
async def end_session(request: web.Request) -> web.Response:
    """The caller's session ended (its CLI's session-end hook): ``gone`` from now on."""
    context, me = ctx(request), caller(request)
    session, _ = session_of(await json_body(request))
    known = await AgentSession.end(me.user_id, session)
    context.presence.forget(me.user_id, session)
    await context.presence.changed(me.user_id)
    return ok({"ended": known})


@routes.get("/presence")
async def presence(request: web.Request) -> web.Response:
    """Sessions of the identities named in ``users`` (comma-separated ``@Nick``s or user ids;
    default the caller): state, CLI, host, repository, since when, attention accounting."""
    context, me = ctx(request), caller(request)
    names = [n for n in request.query.get("users", "").split(",") if n]
    if len(names) > 100:
        raise ErrorAnswer(400, "M_INVALID_PARAM", "'users' names at most 100 identities")
    user_ids = [
        await context.rooms.resolve_user(n if n.startswith("@") else "@" + n) for n in names
    ] or [me.user_id]
    found = await context.presence.of_users(user_ids)
    return ok(
        {
            "identities": [
                {
                    "user_id": user_id,
                    "name": await context.rooms.person_name(user_id),
                    **presence_json(views),
                }
                for user_id, views in found.items()
            ]
        }
    )
